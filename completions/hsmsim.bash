# bash completion for hsmfleet(1)                         -*- shell-script -*-
#
# shellcheck shell=bash disable=SC2207,SC2254,SC2053
# (COMPREPLY=($(compgen ...)) is the bash-completion idiom; the option lists
# in case patterns and [[ == ]] are extglob patterns, meant to match as such.)
#
# Installed as .../bash-completion/completions/hsmsim, where bash-completion
# (2.11 or later) loads it the first time hsmsim is completed.
#
#   hsmsim [GLOBAL OPTIONS] serve|softcard|cardset|key|module [SUBCOMMAND] ...
#
# The global options (--socket, --log-level, ...) are accepted after any
# subcommand too, so they are offered at every level.

# Asks the HSM service, quietly: runs "hsmsim [--socket S] ARGS..." with
# S=$_hsmsim_socket when set, and prints the first column of its table
# (the last column with --last first) without the header line. Prints
# nothing, quickly, when hsmsim is not installed, fails (then the status is
# 1), or does not answer within 2 s.
_hsmsim_query()
{
    local last=''
    [[ $1 == --last ]] && last=1 && shift
    local program=${_hsmsim_program:-hsmsim}
    type -P "$program" &>/dev/null || return 0
    local -a cmd=("$program")
    [[ -n ${_hsmsim_socket-} ]] && cmd+=(--socket "$_hsmsim_socket")
    type -P timeout &>/dev/null && cmd=(timeout -k 1 2 "${cmd[@]}")
    local out line
    out=$("${cmd[@]}" "$@" </dev/null 2>/dev/null) || return 1
    local -a rows
    mapfile -t rows <<<"$out"
    for line in "${rows[@]:1}"; do
        if [[ -n $last ]]; then
            printf '%s\n' "${line##*[[:space:]]}"
        else
            printf '%s\n' "${line%%[[:space:]]*}"
        fi
    done
}

_hsmsim()
{
    local cur prev words cword split
    # -n : keeps "softcard:NAME" (--protect) one word.
    _init_completion -s -n : || return

    local global_opts='-h --help --socket --admin-socket --log-level -v --verbose -q --quiet'
    local with_value='@(--socket|--admin-socket|--log-level|--fleet|--kmdata|--modules|--op-latency-ms|--init-delay-ms|--max-objects-per-uid|--max-keys-per-uid|--max-tokens-per-uid|--max-world-mib|--max-connections|--max-connections-per-uid|--idle-timeout|--passphrase-file|--type|--label|--id|--protect)'

    # Walk the words before the cursor: the subcommands given (path, e.g.
    # "module clear"), how many positional arguments follow them (nargs),
    # and the socket to ask for names.
    local i word path='' nargs=0 _hsmsim_socket='' _hsmsim_program=${COMP_WORDS[0]}
    for ((i = 1; i < cword; i++)); do
        word=${words[i]}
        case $word in
            $with_value)
                ((i++))
                [[ $word == --socket ]] && _hsmsim_socket=${words[i]}
                ;;
            --socket=*) _hsmsim_socket=${word#*=} ;;
            -*) ;;
            *)
                if [[ " $(_hsmsim_subcommands "$path") " == *" $word "* ]]; then
                    path=${path:+$path }$word
                else
                    ((nargs++))
                fi
                ;;
        esac
    done
    [[ $_hsmsim_socket == \~/* ]] && _hsmsim_socket=$HOME/${_hsmsim_socket#\~/}

    case $prev in
        --socket | --admin-socket | --passphrase-file)
            _filedir
            return
            ;;
        --kmdata)
            _filedir -d
            return
            ;;
        --fleet)
            _filedir toml
            return
            ;;
        --log-level)
            COMPREPLY=($(compgen -W 'trace debug info warn error critical off' -- "$cur"))
            return
            ;;
        --type)
            COMPREPLY=($(compgen -W 'rsa-2048 rsa-3072 rsa-4096 ec-p256 ec-p384
                aes-128 aes-192 aes-256' -- "$cur"))
            return
            ;;
        --protect)
            # module, softcard:NAME or cardset:NAME. When the service does
            # not answer for the softcards, do not wait for it again.
            local -a choices=(module)
            local names name kind
            for kind in softcard cardset; do
                names=$(_hsmsim_query $kind list) || break
                for name in $names; do
                    choices+=("$kind:$name")
                done
            done
            COMPREPLY=($(compgen -W "${choices[*]}" -- "$cur"))
            __ltrim_colon_completions "$cur"
            return
            ;;
        --modules | --op-latency-ms | --init-delay-ms | --max-objects-per-uid | --max-keys-per-uid | --max-tokens-per-uid | --max-world-mib | --max-connections | --max-connections-per-uid | --idle-timeout | --label | --id)
            return
            ;;
    esac
    $split && return

    if [[ $cur == -* ]]; then
        local opts=$global_opts
        case $path in
            '') opts+=' --version' ;;
            serve) opts+=' --fleet --simulate --kmdata --modules --op-latency-ms --init-delay-ms --max-objects-per-uid --max-keys-per-uid --max-tokens-per-uid --max-world-mib --max-connections --max-connections-per-uid --idle-timeout' ;;
            softcard\ create | cardset\ create) opts+=' --passphrase-file' ;;
            softcard\ delete | cardset\ delete) opts+=' --with-keys --passphrase-file' ;;
            *\ list) opts+=' --json' ;;
            key\ generate) opts+=' --type --label --id --protect --allow-duplicate --passphrase-file' ;;
            key\ delete) opts+=' --passphrase-file' ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi

    local subcommands
    subcommands=$(_hsmsim_subcommands "$path")
    if [[ -n $subcommands ]]; then
        COMPREPLY=($(compgen -W "$subcommands" -- "$cur"))
        return
    fi

    # Positional arguments: the module number N comes first; what delete
    # deletes (a token's name, a key's ident, the last column of key list).
    local IFS=$'\n'
    case $path in
        softcard\ delete | cardset\ delete)
            if ((nargs == 0)); then
                COMPREPLY=($(compgen -W "$(_hsmsim_query "${path% delete}" list)" -- "$cur"))
            fi
            ;;
        key\ delete)
            if ((nargs == 0)); then
                COMPREPLY=($(compgen -W "$(_hsmsim_query --last key list)" -- "$cur"))
            fi
            ;;
        module\ clear | module\ fail | module\ restore | module\ remove | module\ drain | module\ undrain | module\ latency | module\ fail-next)
            if ((nargs == 0)); then
                COMPREPLY=($(compgen -W "$(_hsmsim_query module list)" -- "$cur"))
            fi
            ;;
    esac
} &&
    complete -F _hsmsim hsmsim hsmfleet

# The subcommands under "hsmsim PATH" (PATH: "" or e.g. "module").
_hsmsim_subcommands()
{
    case $1 in
        '') echo serve softcard cardset key module ;;
        softcard | cardset) echo create delete list ;;
        key) echo generate delete list ;;
        module) echo list clear fail restore remove drain undrain add latency fail-next ;;
    esac
}

# ex: filetype=sh
