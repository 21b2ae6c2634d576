#!/bin/sh
# `make demo`: make the busybox base image, then build examples/hello on the
# embedded default builder (a local coordinator and worker, no setup) into
# an OCI image layout tar.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
fixtures=${KILN_FIXTURES:-$top/.state/fixtures}
mkdir -p out
tests/fixtures/mkbase.sh "$fixtures/busybox"
bin/kiln build --progress plain \
	--build-context busybox=oci-layout://"$fixtures/busybox" \
	-t hello:latest -o type=oci,dest=out/hello.tar examples/hello
cat <<MSG

Built out/hello.tar (an OCI image layout). Look at it with:
  skopeo inspect oci-archive:out/hello.tar:latest
  mkdir -p out/hello-oci && tar -C out/hello-oci -xf out/hello.tar && umoci unpack --image out/hello-oci:latest out/hello-bundle
  cat out/hello-bundle/rootfs/app/greeting.txt
The builder that ran it: bin/kiln builder ls
MSG
