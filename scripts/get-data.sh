#!/usr/bin/env bash
# Fetches the datasets the engine trains on and verifies their checksums.
#
#   scripts/get-data.sh [mnist|cifar10|all] [--dest DIR] [--from LOCAL_DIR]
#
#   mnist    the four original MNIST .gz files      -> DEST/mnist/
#   cifar10  CIFAR-10 binary version (tarball)      -> DEST/cifar-10-batches-bin/
#   all      both (the default)
#   --dest   where to put them (default ./data; the engine reads --data DIR
#            or $VAE_DATA_DIR, else ./data)
#   --from   copy from a local folder instead of downloading (e.g. ../shared/data);
#            the same checksums are verified
#
# Every file is written under a temporary name and renamed only once its
# checksum matches, so an interrupted or corrupt download never leaves a file
# the loaders would pick up. Files already present with the right checksum are
# left alone.
set -euo pipefail

MNIST_URLS=(https://ossci-datasets.s3.amazonaws.com/mnist http://yann.lecun.com/exdb/mnist)
# SHA256 of the original files (also in shared/data/SOURCES.md).
MNIST_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
             t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
MNIST_SHA256=(440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
              3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
              8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
              f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6)

CIFAR_URL=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
CIFAR_TAR=cifar-10-binary.tar.gz
CIFAR_MD5=c32a1d4ab5d03f1284b67883e8d87530
CIFAR_DIR=cifar-10-batches-bin
# An already unpacked folder given with --from has no published checksum per
# file; these are the git blob ids (sha1 of "blob <size>\0" + content) recorded
# in shared/data/SOURCES.md, plus the exact sizes.
CIFAR_FILES=(data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin
             data_batch_5.bin test_batch.bin batches.meta.txt)
CIFAR_SIZES=(30730000 30730000 30730000 30730000 30730000 30730000 61)
CIFAR_BLOBS=(da09f891072747be90e69e4f00ba7cba870dc87e 7e958840b7a55df3353574298ebc9ca0e4bba48e
             5259a3e9674ffdf2d5c33a1067f7192ff06c9e2f 301e7d16d78428f13262e87a5bc78ed45b8224aa
             51fe428dfbdd065852912743ae8b7b63bb1e9d8d e3f3b4653f18f27ada1558cabc3352a3ed1b25cc
             cc82768074b9031bc26f480af98f94d9e9411bce)

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}
die() { echo "get-data: error: $*" >&2; exit 1; }
say() { echo "get-data: $*"; }

what=all dest=./data from=""
while [ $# -gt 0 ]; do
  case "$1" in
    mnist|cifar10|all) what=$1 ;;
    --dest) [ $# -ge 2 ] || die "--dest needs a folder"; dest=$2; shift ;;
    --dest=*) dest=${1#--dest=} ;;
    --from) [ $# -ge 2 ] || die "--from needs a folder"; from=$2; shift ;;
    --from=*) from=${1#--from=} ;;
    -h|--help) usage 0 ;;
    *) echo "get-data: unknown argument '$1'" >&2; usage 2 ;;
  esac
  shift
done
[ -n "$dest" ] || die "--dest is empty"
if [ -n "$from" ] && [ ! -d "$from" ]; then die "--from $from: no such folder"; fi

# ---------------------------------------------------------------- tools
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else die "neither sha256sum nor shasum found; cannot verify downloads"; fi
}
md5_of() {
  if command -v md5sum >/dev/null 2>&1; then md5sum "$1" | cut -d' ' -f1
  elif command -v md5 >/dev/null 2>&1; then md5 -q "$1"
  else die "neither md5sum nor md5 found; cannot verify downloads"; fi
}
# git's blob id of a file, without needing git.
blob_of() {
  local size
  size=$(wc -c <"$1" | tr -d ' ')
  if command -v sha1sum >/dev/null 2>&1; then
    { printf 'blob %s\0' "$size"; cat "$1"; } | sha1sum | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    { printf 'blob %s\0' "$size"; cat "$1"; } | shasum -a 1 | cut -d' ' -f1
  else die "neither sha1sum nor shasum found; cannot verify files"; fi
}
checksum() { # kind file
  case "$1" in sha256) sha256_of "$2" ;; md5) md5_of "$2" ;; esac
}

# Temporary files are removed on any exit.
TMPS=()
cleanup() { local t; for t in "${TMPS[@]+"${TMPS[@]}"}"; do rm -rf -- "$t"; done; }
trap cleanup EXIT
TMP=""
tmp_in() { # dir name: sets TMP to a fresh temporary path next to the final file
  TMP="$1/.$2.part.$$"
  TMPS+=("$TMP")
  rm -rf -- "$TMP"
}

# Download $1 to $2; returns curl's or wget's status, its message on stderr.
download() {
  if command -v curl >/dev/null 2>&1; then
    curl -fL --retry 2 --connect-timeout 20 -sS -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$2" "$1"
  else
    echo "neither curl nor wget is installed" >&2
    return 127
  fi
}

# fetch URL... : download into `out` from the first URL that works, or fail
# with a message that says what to do without network.
fetch() { # out name url...
  local out=$1 name=$2 url status
  shift 2
  for url in "$@"; do
    say "downloading $url"
    if download "$url" "$out"; then return 0; else status=$?; fi
    echo "get-data: download of $url failed (exit status $status)" >&2
  done
  die "could not download $name from any of: $*
  No network here? Fetch the file on another machine and run
  scripts/get-data.sh ${what} --from DIR --dest $dest"
}

# Copy or download one file into dir/name, verify, then rename into place.
# get_verified dir name kind expected local_source url...
get_verified() {
  local dir=$1 name=$2 kind=$3 want=$4 src=$5 got tmp
  shift 5
  if [ -f "$dir/$name" ]; then
    got=$(checksum "$kind" "$dir/$name")
    if [ "$got" = "$want" ]; then say "$dir/$name: already present, $kind ok"; return 0; fi
    say "$dir/$name: present but its $kind is $got, expected $want; fetching it again"
  fi
  tmp_in "$dir" "$name"
  tmp=$TMP
  if [ -n "$src" ]; then
    say "copying $src"
    cp -- "$src" "$tmp"
    chmod u+w -- "$tmp"
  else
    fetch "$tmp" "$name" "$@"
  fi
  got=$(checksum "$kind" "$tmp")
  [ "$got" = "$want" ] || die "$name: $kind mismatch: got $got, expected $want (from ${src:-$*}); file discarded"
  mv -f -- "$tmp" "$dir/$name"
  say "$dir/$name: $kind ok"
}

# ---------------------------------------------------------------- MNIST
get_mnist() {
  local dir="$dest/mnist" i name src urls u
  mkdir -p "$dir"
  for i in "${!MNIST_FILES[@]}"; do
    name=${MNIST_FILES[$i]}
    src=""
    if [ -n "$from" ]; then
      if [ -f "$from/mnist/$name" ]; then src="$from/mnist/$name"
      elif [ -f "$from/$name" ]; then src="$from/$name"
      else die "$name not found in $from/mnist or $from"; fi
    fi
    urls=()
    for u in "${MNIST_URLS[@]}"; do urls+=("$u/$name"); done
    get_verified "$dir" "$name" sha256 "${MNIST_SHA256[$i]}" "$src" "${urls[@]}"
  done
  say "MNIST ready in $dir"
}

# ---------------------------------------------------------------- CIFAR-10
cifar_complete() { # dir: all batch files present with the right size
  local i
  for i in "${!CIFAR_FILES[@]}"; do
    [ -f "$1/${CIFAR_FILES[$i]}" ] || return 1
    [ "$(wc -c <"$1/${CIFAR_FILES[$i]}" | tr -d ' ')" = "${CIFAR_SIZES[$i]}" ] || return 1
  done
}

# Unpack a verified tarball into DEST/cifar-10-batches-bin (via a temporary
# folder, renamed when complete).
unpack_cifar() { # tarball
  local tmpd
  tmp_in "$dest" "$CIFAR_DIR"
  tmpd=$TMP
  mkdir -p "$tmpd"
  say "unpacking $1"
  tar -xzf "$1" -C "$tmpd"
  cifar_complete "$tmpd/$CIFAR_DIR" || die "$1: the tarball does not hold the expected $CIFAR_DIR files"
  rm -rf -- "${dest:?}/$CIFAR_DIR"
  mv -- "$tmpd/$CIFAR_DIR" "$dest/$CIFAR_DIR"
}

get_cifar() {
  mkdir -p "$dest"
  if cifar_complete "$dest/$CIFAR_DIR"; then
    say "$dest/$CIFAR_DIR: already present (all batch files, sizes ok)"
    return 0
  fi
  if [ -n "$from" ]; then
    local tar="" d="" i got
    if [ -f "$from/$CIFAR_TAR" ]; then tar="$from/$CIFAR_TAR"
    elif [ -f "$from/cifar10/$CIFAR_TAR" ]; then tar="$from/cifar10/$CIFAR_TAR"
    elif [ -d "$from/$CIFAR_DIR" ]; then d="$from/$CIFAR_DIR"
    else die "CIFAR-10 not found in $from: expected $CIFAR_TAR or a $CIFAR_DIR/ folder"; fi
    if [ -n "$tar" ]; then
      got=$(md5_of "$tar")
      [ "$got" = "$CIFAR_MD5" ] || die "$tar: md5 mismatch: got $got, expected $CIFAR_MD5"
      say "$tar: md5 ok"
      unpack_cifar "$tar"
    else
      local tmpd
      tmp_in "$dest" "$CIFAR_DIR"
  tmpd=$TMP
      mkdir -p "$tmpd"
      for i in "${!CIFAR_FILES[@]}"; do
        [ -f "$d/${CIFAR_FILES[$i]}" ] || die "$d/${CIFAR_FILES[$i]}: missing"
        say "copying $d/${CIFAR_FILES[$i]}"
        cp -- "$d/${CIFAR_FILES[$i]}" "$tmpd/"
        got=$(blob_of "$tmpd/${CIFAR_FILES[$i]}")
        [ "$got" = "${CIFAR_BLOBS[$i]}" ] ||
          die "$d/${CIFAR_FILES[$i]}: git blob id $got, expected ${CIFAR_BLOBS[$i]}; not the original file"
      done
      rm -rf -- "${dest:?}/$CIFAR_DIR"
      mv -- "$tmpd" "$dest/$CIFAR_DIR"
    fi
  else
    get_verified "$dest" "$CIFAR_TAR" md5 "$CIFAR_MD5" "" "$CIFAR_URL"
    unpack_cifar "$dest/$CIFAR_TAR"
    rm -f -- "${dest:?}/$CIFAR_TAR"
  fi
  say "CIFAR-10 ready in $dest/$CIFAR_DIR"
}

case "$what" in
  mnist) get_mnist ;;
  cifar10) get_cifar ;;
  all) get_mnist; get_cifar ;;
esac
say "done; train with --data $dest (or VAE_DATA_DIR=$dest)"
