#!/bin/bash
# Completes a command line as bash does on TAB, with bash-completion loaded,
# and prints "#elapsed SECONDS" (how long the completion function took), then
# the candidates (COMPREPLY), one a line.
#
#   bash_complete.sh LINE WORD...
#
# LINE is the command line, the cursor at its end; the WORDs are the words
# bash makes of it for completion (COMP_WORDS, where "--opt=value" is the
# three words "--opt" "=" "value"), the last one being the word under the
# cursor (possibly empty). The completion of WORD[0] is found the way
# bash-completion finds an installed one: set BASH_COMPLETION_USER_DIR to a
# directory whose completions/ holds it under the command's name.

line=$1
shift

# shellcheck source=/dev/null
. /usr/share/bash-completion/bash_completion

# Outside a completion started by readline the compopt builtin refuses to run
# (and says so on stderr); the options it sets only affect how readline
# inserts a match, not the candidates, so ignore them here.
# shellcheck disable=SC2317 # called by the completion functions
compopt() { :; }

_completion_loader "$1"
spec=$(complete -p "$1" 2>/dev/null) || {
    echo "bash_complete.sh: no completion loaded for $1" >&2
    exit 2
}
[[ $spec =~ -F\ ([^ ]+) ]] || {
    echo "bash_complete.sh: not a completion function: $spec" >&2
    exit 2
}
func=${BASH_REMATCH[1]}

COMP_LINE=$line
COMP_POINT=${#line}
COMP_WORDS=("$@")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_TYPE=9
COMP_KEY=9
COMPREPLY=()
prev=
((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
start=${EPOCHREALTIME/[.,]/}
"$func" "$1" "${COMP_WORDS[COMP_CWORD]}" "$prev"
us=$((${EPOCHREALTIME/[.,]/} - start))
printf '#elapsed %d.%06d\n' $((us / 1000000)) $((us % 1000000))
((${#COMPREPLY[@]})) && printf '%s\n' "${COMPREPLY[@]}"
exit 0
