#!/usr/bin/env python3
"""Differential comparison of images built by kiln, BuildKit and buildah.

  compare.py snap LAYOUT_DIR REF ROOTFS OUT.json [DOCKER_ARCHIVE]
      Records what is compared of one image: the file tree of its unpacked
      rootfs (path, type, permission bits with setuid/setgid/sticky,
      uid/gid, link count of regular files, sha256 of contents, symlink
      target, device numbers; never mtimes) and, from the OCI layout's
      image config, the config fields below, the history (created_by and
      empty_layer) and the number of layers. With DOCKER_ARCHIVE (what
      `docker save` wrote) the config comes from there instead.

  compare.py diff --expected EXPECTED.md --builder NAME --case CASE REF.json OTHER.json
      Prints each difference of OTHER from REF (the BuildKit image) as
      "KEY: buildkit=X NAME=Y". A difference that a row of EXPECTED.md's
      table (| builder | case | key | reason |, shell-style globs) matches
      is printed with "expected:" and the reason, and does not count.
      Exit status: 0 when every difference is expected, 1 otherwise.

  compare.py match EXPECTED.md BUILDER CASE KEY
      Exit 0 and print the reason when a row of EXPECTED.md matches.

Standard library only.
"""
import fnmatch
import hashlib
import json
import os
import re
import stat
import sys

CONFIG_FIELDS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels",
                 "ExposedPorts", "Volumes", "StopSignal", "Shell",
                 "Healthcheck", "OnBuild"]


def blob(layout, digest):
    algo, hexd = digest.split(":", 1)
    with open(os.path.join(layout, "blobs", algo, hexd), "rb") as f:
        return json.load(f)


def image_config(layout, ref):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    descs = index.get("manifests", [])
    for d in descs:
        if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref:
            break
    else:
        if len(descs) != 1:
            raise SystemExit("compare.py: no manifest %r in %s" % (ref, layout))
        d = descs[0]
    manifest = blob(layout, d["digest"])
    while "manifests" in manifest:          # an index: take its only/first image
        manifest = blob(layout, manifest["manifests"][0]["digest"])
    config = blob(layout, manifest["config"]["digest"])
    return config, len(manifest.get("layers", []))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree(rootfs):
    out = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(full, rootfs)
            st = os.lstat(full)
            m = st.st_mode
            e = {"mode": "%04o" % stat.S_IMODE(m), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(m):
                e["type"] = "file"
                e["sha256"] = sha256_file(full)
                e["size"] = st.st_size
                e["nlink"] = st.st_nlink
            elif stat.S_ISDIR(m):
                e["type"] = "dir"
            elif stat.S_ISLNK(m):
                e["type"] = "symlink"
                e["target"] = os.readlink(full)
                del e["mode"]                # meaningless on Linux
            elif stat.S_ISFIFO(m):
                e["type"] = "fifo"
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                e["type"] = "char" if stat.S_ISCHR(m) else "block"
                e["rdev"] = "%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
            elif stat.S_ISSOCK(m):
                e["type"] = "socket"
            out[rel] = e
        # os.walk does not descend into symlinked dirs: good.
    return out


def docker_archive_config(path):
    import tarfile
    with tarfile.open(path) as t:
        m = json.load(t.extractfile("manifest.json"))
        return json.load(t.extractfile(m[0]["Config"])), len(m[0]["Layers"])


def snap(layout, ref, rootfs, dest, archive=None):
    config, nlayers = image_config(layout, ref)
    if archive:
        # skopeo's conversion to OCI drops the Docker-only fields (Shell,
        # Healthcheck, OnBuild): take the config from `docker save` itself.
        config, nlayers = docker_archive_config(archive)
    c = config.get("config") or {}
    s = {
        "config": {k: c.get(k) for k in CONFIG_FIELDS},
        "history": [{"created_by": h.get("created_by", ""),
                     "empty_layer": bool(h.get("empty_layer", False))}
                    for h in config.get("history") or []],
        "layers": nlayers,
        "files": tree(rootfs),
    }
    # Empty and missing are the same thing in an image config.
    for k, v in list(s["config"].items()):
        if v in ([], {}, "", None):
            s["config"][k] = None
    with open(dest, "w") as f:
        json.dump(s, f, indent=1, sort_keys=True)


def load_expected(path):
    rules = []
    in_table = False
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("|"):
                in_table = False
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) < 4:
                continue
            if cells[0].lower() == "builder":
                in_table = True
                continue
            if not in_table or set(cells[0]) <= set("-: "):
                continue
            unq = [c.strip("`") for c in cells[:3]]
            rules.append((unq[0], unq[1], unq[2], cells[3]))
    return rules


def short(v):
    s = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
    return s if len(s) <= 160 else s[:157] + "..."


def describe(e):
    if e is None:
        return "absent"
    parts = [e["type"]]
    if "mode" in e:
        parts.append(e["mode"])
    parts.append("%d:%d" % (e["uid"], e["gid"]))
    if "target" in e:
        parts.append("-> " + e["target"])
    if "size" in e:
        parts.append("%dB" % e["size"])
    return " ".join(parts)


def differences(ref, other):
    """(key, message) pairs."""
    d = []
    for k in CONFIG_FIELDS:
        a, b = ref["config"].get(k), other["config"].get(k)
        if a != b:
            d.append(("config." + k, "%s vs %s" % (short(a), short(b))))
    if ref["layers"] != other["layers"]:
        d.append(("layers", "%d vs %d layers" % (ref["layers"], other["layers"])))
    if ref["history"] != other["history"]:
        ra, ob = ref["history"], other["history"]
        for i in range(max(len(ra), len(ob))):
            a = ra[i] if i < len(ra) else None
            b = ob[i] if i < len(ob) else None
            if a != b:
                d.append(("history", "entry %d: %s vs %s" % (i, short(a), short(b))))
                break
    rf, of = ref["files"], other["files"]
    for p in sorted(set(rf) | set(of)):
        a, b = rf.get(p), of.get(p)
        if a == b:
            continue
        if a is None or b is None or a["type"] != b["type"]:
            d.append((p, "%s vs %s" % (describe(a), describe(b))))
            continue
        what = []
        for attr in ("mode", "uid", "gid", "target", "rdev", "nlink"):
            if a.get(attr) != b.get(attr):
                what.append("%s %s vs %s" % (attr, a.get(attr), b.get(attr)))
        if a.get("sha256") != b.get("sha256"):
            what.append("contents differ (%dB vs %dB)" % (a.get("size", 0), b.get("size", 0)))
        d.append((p, "; ".join(what)))
    return d


def matches(rule, builder, case, key):
    rb, rc, rk, _ = rule
    return (fnmatch.fnmatchcase(builder, rb) and fnmatch.fnmatchcase(case, rc)
            and fnmatch.fnmatchcase(key, rk))


def diff(argv):
    opts = {}
    args = []
    i = 0
    while i < len(argv):
        if argv[i] in ("--expected", "--builder", "--case"):
            opts[argv[i][2:]] = argv[i + 1]
            i += 2
        else:
            args.append(argv[i])
            i += 1
    if len(args) != 2:
        raise SystemExit(__doc__)
    with open(args[0]) as f:
        ref = json.load(f)
    with open(args[1]) as f:
        other = json.load(f)
    builder = opts.get("builder", "other")
    case = opts.get("case", "")
    rules = load_expected(opts["expected"]) if "expected" in opts else []
    unexpected = 0
    for key, msg in differences(ref, other):
        rule = next((r for r in rules if matches(r, builder, case, key)), None)
        if rule:
            print("    expected: %s: %s (%s)" % (key, msg, rule[3]))
        else:
            unexpected += 1
            print("    DIFFERS:  %s: %s" % (key, msg))
    return 1 if unexpected else 0


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "snap" and len(sys.argv) in (6, 7):
        snap(*sys.argv[2:])
        return 0
    if len(sys.argv) >= 2 and sys.argv[1] == "diff":
        return diff(sys.argv[2:])
    if len(sys.argv) == 6 and sys.argv[1] == "match":   # EXPECTED BUILDER CASE KEY
        for r in load_expected(sys.argv[2]):
            if matches(r, *sys.argv[3:6]):
                print(r[3])
                return 0
        return 1
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
