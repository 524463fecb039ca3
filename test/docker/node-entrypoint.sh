#!/bin/sh
# /usr/local/bin/docker-entrypoint.sh of the Node.js stand-in image, doing what the official image's does:
# `docker run IMAGE -e 'code'` or `docker run IMAGE script.js` runs node, any other command runs as it is.
set -e

if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ] || { [ -f "${1}" ] && ! [ -x "${1}" ]; }; then
  set -- node "$@"
fi

exec "$@"
