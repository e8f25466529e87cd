#!/bin/bash
# Mutation check for the conformance suite: each mutation breaks one rule
# of the router's conntrack or FTP helper in a scratch copy of the tree,
# builds that router and runs the suite against it. Every mutation must
# make the suite fail. Run as root from the repository root:
#
#   bash test/conformance/testdata/mutations.sh [NAME...]
#
# ROUTER_BUILD may name a command that builds the router from the copy into
# $OUT (default: go build -o "$OUT" ./cmd/router). Nothing in the working
# tree is changed.
set -u
root=$(pwd)
scratch=$(mktemp -d /tmp/conformance-mut.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# name | file | perl substitution (must change the file)
mutations=(
  'rst-below-maxack-valid|conntrack/tcp.go|s/if seqBefore\(seq, other\.maxack\) && !in\.cfg\.IgnoreInvalidRST \{/if false \&\& seqBefore(seq, other.maxack) \&\& !in.cfg.IgnoreInvalidRST {/'
  'seq-above-window-ignored|conntrack/tcp.go|s/case tcpWinInvalid:\n\t\t\tout\.action = tcpInvalid/case tcpWinInvalid:\n\t\t\tout.action = tcpIgnore/'
  'fin-without-ack-allowed|conntrack/tcp.go|s/for _, f := range \[\]packet\.TCPFlags\{S, S \| U,/for _, f := range []packet.TCPFlags{F, S, S | U,/'
  'loose-ignored|conntrack/tcp.go|s/if !cfg\.Loose \{/if false \&\& !cfg.Loose {/'
  'icmp-outer-daddr-unchecked|conntrack/track.go|s/if k\.Dst != p\.Key\.Dst \{/if false \&\& k.Dst != p.Key.Dst {/'
  'ftp-partial-accepted|helpers/ftp/ftp.go|s/return conntrack\.HelperResult\{Drop: true, Why: why\}/return conntrack.HelperResult{}/'
)

want=("$@")
fail=0
for m in "${mutations[@]}"; do
  IFS='|' read -r name file subst <<<"$m"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " =~ " $name " ]]; then continue; fi
  rm -rf "$scratch/tree"; mkdir -p "$scratch/tree"
  tar -C "$root" --exclude=.git --exclude='*.test' -cf - . | tar -C "$scratch/tree" -xf -
  before=$(md5sum "$scratch/tree/$file")
  perl -0pi -e "$subst" "$scratch/tree/$file"
  if [ "$before" = "$(md5sum "$scratch/tree/$file")" ]; then
    echo "mutation $name: substitution did not apply to $file"; fail=1; continue
  fi
  OUT="$scratch/router"
  if ! (cd "$scratch/tree" && OUT="$OUT" bash -c "${ROUTER_BUILD:-go build -o \"\$OUT\" ./cmd/router}") >"$scratch/build.log" 2>&1; then
    echo "mutation $name: build failed"; cat "$scratch/build.log"; fail=1; continue
  fi
  out=$(CONFORMANCE_ROUTER="$OUT" go test -count=1 -run '^TestConformance$' -v ./test/conformance/ 2>&1)
  summary=$(grep -m1 '^conformance:' <<<"$out")
  if grep -q '^--- FAIL: TestConformance' <<<"$out"; then
    echo "mutation $name: suite FAILS as it must: $summary"
  else
    echo "mutation $name: suite PASSES: the mutation is not detected: $summary"; fail=1
  fi
done
exit $fail
