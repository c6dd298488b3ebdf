#!/bin/sh
# Like cluster_work.sh, but staged without the executable bit: it must not start.
echo "never runs"
