#!/bin/sh
# The upstream conformance suite behind Caddy: t/20-conformance.t with DS_CONFORMANCE_FRONT.
DS_CONFORMANCE_FRONT=caddy exec perl "$(dirname "$0")/20-conformance.t"
