# Sourced by an interactive `zsh -f` in a pseudo-terminal (see shells.py):
# loads the completion system with $COMPLETIONS_DIR first in $fpath, and
# makes TAB record what the completion adds, in the file $CAPTURE:
#
#   <match>            one line per match added (after matching, as shown)
#   #elapsed SECONDS   how long the completion took
#   #done              the completion has finished
#
# Error output of the completion functions goes to the file $ERRORS.

fpath=($COMPLETIONS_DIR $fpath)
autoload -Uz compinit
compinit -u -D

zmodload zsh/datetime

# Never stop to ask "do you wish to see all N possibilities?": that would
# wait for a key and the completion would not finish.
unsetopt auto_list list_beep
setopt no_beep
LISTMAX=100000

# Completion functions add matches with the compadd builtin. This function
# of the same name records the matches of each real addition, then makes it.
# Calls with -O, -A or -D only compute matches into an array (as _describe
# does); they add nothing and are passed through.
compadd() {
  local -a _capture_computed _capture_matches
  zparseopts -E -a _capture_computed O: A: D:
  if (( $#_capture_computed )); then
    builtin compadd "$@"
    return
  fi
  builtin compadd -O _capture_matches "$@"
  (( $#_capture_matches )) && print -rl -- $_capture_matches >> $CAPTURE
  builtin compadd "$@"
}

_capture_complete() {
  local start=$EPOCHREALTIME
  zle complete-word
  print -r -- "#elapsed $(( EPOCHREALTIME - start ))" >> $CAPTURE
  print -r -- '#done' >> $CAPTURE
}
zle -N _capture_complete
bindkey '^I' _capture_complete

exec 2>>$ERRORS
PS1='zsh-ready> '
