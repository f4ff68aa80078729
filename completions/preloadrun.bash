# bash completion for preloadrun(1)                       -*- shell-script -*-
#
# shellcheck shell=bash disable=SC2207,SC2254,SC2053
# (COMPREPLY=($(compgen ...)) is the bash-completion idiom; the option lists
# in case patterns and [[ == ]] are extglob patterns, meant to match as such.)
#
# Installed as .../bash-completion/completions/preloadrun, where
# bash-completion (2.11 or later) loads it the first time preloadrun is
# completed.
#
#   preloadrun [OPTIONS] [--] COMMAND [ARG...]
#   preloadrun check|status [FILE]
#
# How preloadrun reads its command line, which this file follows:
# - The first word that is neither an option nor an option's value is the
#   subcommand (check, status) or COMMAND. Everything after COMMAND is
#   COMMAND's own, completed by COMMAND's completion.
# - After "--" the next word is always COMMAND: a command named check or
#   status has to be written "preloadrun [OPTIONS] -- check ...".
# - Every option that takes a value takes exactly one (-s a -s b for two
#   softcards), so the word after "-s NAME" may be COMMAND.

# Prints the names of the world's softcards or card sets ($1: softcard or
# cardset), asked of the HSM service at socket $2 (empty: hsmsim's default,
# $HSMFLEET_SOCKET). Prints nothing, quickly, when hsmsim is not installed,
# fails (then the status is 1), or does not answer within 2 s.
_preloadrun_token_names()
{
    type -P hsmsim &>/dev/null || return 0
    local -a cmd=(hsmsim)
    [[ -n $2 ]] && cmd+=(--socket "$2")
    type -P timeout &>/dev/null && cmd=(timeout -k 1 2 "${cmd[@]}")
    local out line
    out=$("${cmd[@]}" "$1" list </dev/null 2>/dev/null) || return 1
    # "hsmsim softcard list": a header line (NAME HASH), then "name hash".
    local -a rows
    mapfile -t rows <<<"$out"
    for line in "${rows[@]:1}"; do
        printf '%s\n' "${line%%[[:space:]]*}"
    done
}

_preloadrun()
{
    # shellcheck disable=SC2034 # words, cword: set by _init_completion
    local cur prev words cword split
    _init_completion -s || return

    # The options that take a value (one each).
    local with_value='@(-s|--softcard|-c|--cardset|--passphrase-file|--passphrase-fd|-f|--tokens-file|--attach|--group|--retry-window|--socket|--log-level)'

    # Walk the words before the cursor to find where the subcommand or
    # COMMAND starts, and the --socket given (for the token names). This
    # walks COMP_WORDS, not words: _command_offset counts in COMP_WORDS, where
    # bash has split "--opt=value" into "--opt", "=", "value".
    local i word socket='' subcommand=''
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --)
                _command_offset $((i + 1))
                return
                ;;
            $with_value)
                [[ ${COMP_WORDS[i + 1]} == = ]] && ((i++)) # --opt=value
                ((i++))
                [[ $word == --socket ]] && socket=${COMP_WORDS[i]}
                # A value with "=" in it (TOKEN=FILE) is split at it, too.
                while [[ ${COMP_WORDS[i + 1]} == = ]] && ((i + 1 < COMP_CWORD)); do
                    ((i += 2))
                done
                ;;
            -*) # a flag, or an option with its value attached (-sNAME)
                ;;
            check | status)
                subcommand=$word
                break
                ;;
            *)
                _command_offset $i
                return
                ;;
        esac
    done
    [[ $socket == \~/* ]] && socket=$HOME/${socket#\~/}

    if [[ -n $subcommand ]]; then
        case $cur in
            -*)
                local opts='-h --help'
                [[ $subcommand == status ]] && opts+=' --json'
                COMPREPLY=($(compgen -W "$opts" -- "$cur"))
                ;;
            *) _filedir ;;
        esac
        return
    fi

    # The value of an option.
    case $prev in
        -s | --softcard | -c | --cardset)
            local kind=softcard
            [[ $prev == -c || $prev == --cardset ]] && kind=cardset
            local IFS=$'\n'
            COMPREPLY=($(compgen -W "$(_preloadrun_token_names "$kind" "$socket")" -- "$cur"))
            return
            ;;
        --passphrase-file)
            # [TOKEN=]FILE: bash splits words at "=", so the word being
            # completed is the FILE part.
            cur=${cur##*=}
            _filedir
            return
            ;;
        -f | --tokens-file | --attach | --socket)
            _filedir
            return
            ;;
        --group)
            COMPREPLY=($(compgen -g -- "$cur"))
            return
            ;;
        --log-level)
            COMPREPLY=($(compgen -W 'trace debug info warn error critical off' -- "$cur"))
            return
            ;;
        --passphrase-fd | --retry-window)
            # A descriptor number; a duration such as 30s or 5m.
            return
            ;;
    esac
    $split && return

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W '-h --help --version -s --softcard -c --cardset
            --passphrase-file --passphrase-fd -f --tokens-file --attach --group
            --no-ha --retry-window --subreaper --process-group --socket --log-level -v --verbose
            -q --quiet' -- "$cur"))
        return
    fi

    # The first word that is not an option: a subcommand or COMMAND.
    _command_offset "$COMP_CWORD"
    COMPREPLY+=($(compgen -W 'check status' -- "$cur"))
} &&
    complete -F _preloadrun preloadrun

# ex: filetype=sh
