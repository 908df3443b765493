#!/bin/sh
# Builds the Go transaction service offline, from Debian's packages only (no module downloads):
#
#   apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev \
#       protoc-gen-go protoc-gen-go-grpc protobuf-compiler
#   examples/shop/go/build.sh OUTPUT        (OUTPUT: the binary to write)
#
# The stubs are generated from proto/chronik/v1/chronik.proto into a temp GOPATH (import path
# chronik/v1), then `go build` runs in GOPATH mode with /usr/share/gocode, where Debian's
# golang-*-dev packages put their sources (google.golang.org/grpc, google.golang.org/protobuf).
# GOCACHE (default ~/.cache/go-build) makes a rebuild take about a second.
set -eu
out=${1:?usage: build.sh OUTPUT}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/chronik-go-build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/src/transaction-service"
proto=chronik/v1/chronik.proto
protoc -I "$root/proto" --go_out="$work/src" --go-grpc_out="$work/src" \
    --go_opt="M$proto=chronik/v1" --go-grpc_opt="M$proto=chronik/v1" "$proto"
cp "$here"/*.go "$work/src/transaction-service/"
cd "$work/src/transaction-service"
GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
    go build -trimpath -o "$out" .
