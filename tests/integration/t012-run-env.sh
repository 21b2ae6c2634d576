#!/bin/sh
# What a RUN step sees, as under BuildKit: /etc/hosts, /etc/resolv.conf and
# the hostname "buildkitsandbox", bound in from outside the image so that
# none of them (nor the mountpoints made for them when the image has no
# such files) ends up in a layer; USER by name, uid:gid and name:group; and
# kiln-worker --install-emulators, which registers qemu-user-static's
# emulators with the F flag once (a second run changes nothing).
. "$(dirname "$0")/lib.sh"
plan 21
need_fixture

ctx=$T/ctx
mkdir -p "$ctx"
cat > "$ctx/Dockerfile" <<'DF'
FROM base
USER nobody
RUN cat /etc/hosts > /tmp/hosts.txt; cat /etc/resolv.conf > /tmp/resolv.txt; hostname > /tmp/hostname.txt; id -un > /tmp/user.txt; id > /tmp/id-name.txt
USER 65534:65534
RUN id > /tmp/id-num.txt
USER nobody:nogroup
RUN id > /tmp/id-group.txt
USER root
RUN --network=host cat /etc/resolv.conf > /tmp/resolv-host.txt
RUN echo not-kept >> /etc/hosts && echo kept > /etc/kept.txt
DF
check "a build that reads the RUN environment" sh -c "'$KILN' build --progress plain \
	--build-context base=oci-layout://'$BASE' -o type=local,dest='$T/out' '$ctx' > '$T/b1.log' 2>&1"
diag "$T/b1.log" | tail -5
o=$T/out/tmp
check "/etc/hosts maps localhost and the hostname" sh -c "
	grep -qx '127.0.0.1	localhost buildkitsandbox' '$o/hosts.txt' &&
	grep -qx '::1	localhost ip6-localhost ip6-loopback' '$o/hosts.txt' && [ \$(wc -l < '$o/hosts.txt') -eq 2 ]"
check "the hostname is buildkitsandbox" sh -c "[ \"\$(cat '$o/hostname.txt')\" = buildkitsandbox ]"
check "resolv.conf of an own network has no localhost nameserver, and some nameserver" sh -c "
	! grep -Eq '^nameserver[[:space:]]+(127\.|::1)' '$o/resolv.txt' && grep -q '^nameserver' '$o/resolv.txt'"
# The host's non-localhost nameservers all come through.
grep -E '^nameserver' /etc/resolv.conf | grep -Ev '^nameserver[[:space:]]+(127\.|::1)' > "$T/host-ns.txt"
check "the host's other nameservers are kept" sh -c "! grep -vxFf '$o/resolv.txt' '$T/host-ns.txt'"
check "resolv.conf with --network=host is the host's file" sh -c "
	if grep -q '^nameserver' /etc/resolv.conf; then cmp /etc/resolv.conf '$o/resolv-host.txt';
	else grep -q '^nameserver 8.8.8.8' '$o/resolv-host.txt'; fi"
check "USER nobody runs as nobody" sh -c "[ \"\$(cat '$o/user.txt')\" = nobody ]"
check "USER nobody: uid 65534, its primary group" grep -q '^uid=65534(nobody) gid=65534(nogroup)' "$o/id-name.txt"
check "USER 65534:65534 resolves both" grep -q '^uid=65534(nobody) gid=65534(nogroup)' "$o/id-num.txt"
check "USER nobody:nogroup resolves both" grep -q '^uid=65534(nobody) gid=65534(nogroup)' "$o/id-group.txt"
check "the image (which has none) gets no /etc/hosts or /etc/resolv.conf" \
	sh -c "[ ! -e '$T/out/etc/hosts' ] && [ ! -e '$T/out/etc/resolv.conf' ]"
check "a file the RUN wrote next to them in /etc is kept" grep -qx kept "$T/out/etc/kept.txt"

# Layer by layer: the mountpoints never reach a layer, and a RUN that does
# not touch /etc leaves no etc/ entry at all.
printf 'FROM base\nRUN echo hi > /hi.txt\nRUN echo x >> /etc/hosts; cat /etc/resolv.conf > /dev/null\n' > "$ctx/Dockerfile"
check "a build to an OCI archive" sh -c "'$KILN' build --progress plain \
	--build-context base=oci-layout://'$BASE' -o type=oci,dest='$T/img.tar' '$ctx' > '$T/b2.log' 2>&1"
mkdir -p "$T/img"
tar -C "$T/img" -xf "$T/img.tar" 2>/dev/null
man=$(jq -r '.manifests[0].digest' "$T/img/index.json" 2>/dev/null | cut -d: -f2)
: > "$T/layers.txt"
for l in $(jq -r '.layers[1:][].digest' "$T/img/blobs/sha256/$man" 2>/dev/null | cut -d: -f2); do
	echo "== $l" >> "$T/layers.txt"
	tar -tzf "$T/img/blobs/sha256/$l" >> "$T/layers.txt" 2>&1
done
diag "$T/layers.txt"
check "the RUN layers hold hi.txt" grep -qx 'hi.txt' "$T/layers.txt"
check "no layer has etc/hosts or etc/resolv.conf" sh -c "! grep -Eq '^(\./)?etc/(hosts|resolv\.conf)$' '$T/layers.txt'"
check "no RUN layer has an etc/ entry" sh -c "! grep -Eq '^(\./)?etc/?$' '$T/layers.txt'"

# Emulators: in this lab qemu-user-static registered them already, so the
# second run is the one that proves idempotence either way.
check "kiln-worker --install-emulators (one-shot, no coordinator)" \
	sh -c "'$WORKER' --install-emulators > '$T/emu1.log' 2>&1"
diag "$T/emu1.log"
check "a second run succeeds and registers nothing" sh -c "'$WORKER' --install-emulators > '$T/emu2.log' 2>&1 &&
	grep -q ' 0 emulator(s) registered' '$T/emu2.log'"
check "qemu-aarch64 is registered, enabled, with flag F" sh -c "
	head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64 | grep -qx enabled &&
	grep '^flags:' /proc/sys/fs/binfmt_misc/qemu-aarch64 | grep -q F"
# The registration path itself, against a stand-in binfmt_misc directory
# (a plain register file collects what would be written to the kernel).
fake=$T/binfmt
mkdir -p "$fake" && : > "$fake/register"
printf 'enabled\ninterpreter /usr/bin/qemu-arm-static\nflags: \noffset 0\n' > "$fake/qemu-arm"
check "--binfmt-dir: registers the missing handlers, keeps one without F" sh -c "
	'$WORKER' --install-emulators --binfmt-dir '$fake' > '$T/emu3.log' 2>&1 &&
	grep -q ' 4 emulator(s) registered' '$T/emu3.log' &&
	grep -q \"'qemu-arm' is registered without the F flag\" '$T/emu3.log'"
diag "$T/emu3.log"
check "the registrations are Debian's magic and mask with flag F" sh -c "
	grep -qF ':qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/bin/qemu-aarch64-static:F' '$fake/register' &&
	! grep -q qemu-arm: '$fake/register'"
done_testing
