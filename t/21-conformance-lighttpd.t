#!/bin/sh
# The upstream conformance suite behind lighttpd: t/20-conformance.t with DS_CONFORMANCE_FRONT.
DS_CONFORMANCE_FRONT=lighttpd exec perl "$(dirname "$0")/20-conformance.t"
