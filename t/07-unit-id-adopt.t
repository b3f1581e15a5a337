#!/bin/sh
exec ${DS_UNIT_WRAP:-} "${DS_UNIT_DIR:-build/t}/id_adopt_test"
