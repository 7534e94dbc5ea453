# Helpers for the shell tests (tests/<layer>/test_*.sh), sourced by them:
#   . "${TM_SOURCE_DIR:?}/tests/lib.sh"
# check NAME EXPECTED_STATUS COMMAND...  runs COMMAND, keeps stdout+stderr in
#                                        $out, counts a pass when it exits so
# contains NAME TEXT                     counts a pass when $out holds TEXT
# same NAME A B                          counts a pass when the strings A and B are equal
# The caller ends with its summary line and `[ "$fail" -eq 0 ]`.
pass=0 fail=0
check() {
  local name=$1 want=$2; shift 2
  out=$("$@" 2>&1); local got=$?
  if [ "$got" -eq "$want" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $name: exit $got, want $want: $out"; fi
}
contains() {
  if grep -q -- "$2" <<<"$out"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $1: no '$2' in: $out"; fi
}
same() {
  if [ "$2" == "$3" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $1: '${2:0:300}' != '${3:0:300}'"; fi
}
