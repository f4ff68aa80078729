# fish completion for preloadrun(1). Installed in a directory of
# $fish_complete_path (such as /usr/share/fish/vendor_completions.d), where
# fish loads it the first time preloadrun is completed.
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

# Where the cursor is. Walks the tokens before it and prints one of:
#   option                an option, or the value right after one
#   first                 the first word that is not an option: a
#                         subcommand or COMMAND
#   subcommand NAME       an argument of check or status
#   command WORD...       in COMMAND's arguments; WORDs: COMMAND, its
#                         arguments and the word being completed
function __preloadrun_where
    set -l tokens (commandline -opc)
    set -e tokens[1]
    while set -q tokens[1]
        set -l token $tokens[1]
        set -e tokens[1]
        switch $token
            case --
                printf '%s\n' command $tokens (commandline -ct)
                return
            case -s --softcard -c --cardset --passphrase-file --passphrase-fd -f --tokens-file \
                --attach --group --retry-window --socket --log-level
                if not set -q tokens[1]
                    echo option # the cursor is on its value
                    return
                end
                set -e tokens[1]
            case '-*' # a flag, or an option with its value attached
            case check status
                printf '%s\n' subcommand $token
                return
            case '*'
                printf '%s\n' command $token $tokens (commandline -ct)
                return
        end
    end
    if string match -q -- '-*' (commandline -ct)
        echo option
        return
    end
    echo first
end

# True when what __preloadrun_where prints starts with $argv.
function __preloadrun_at
    set -l where (__preloadrun_where)
    for i in (seq (count $argv))
        set -q where[$i]; and test "$where[$i]" = "$argv[$i]"; or return 1
    end
end

# The --socket given before the cursor (empty: none).
function __preloadrun_socket
    set -l tokens (commandline -opc)
    set -l socket
    while set -q tokens[1]
        switch $tokens[1]
            case --
                break
            case --socket
                set socket $tokens[2]
            case '--socket=*'
                set socket (string replace -- --socket= '' $tokens[1])
        end
        set -e tokens[1]
    end
    printf '%s\n' $socket
end

# Names of the world's softcards or card sets ($argv[1]: softcard or
# cardset), asked of the HSM service at the --socket given on the command
# line, else hsmsim's default ($HSMFLEET_SOCKET). Prints nothing, quickly,
# when hsmsim is not installed, fails, or does not answer within 2 s.
function __preloadrun_token_names
    command -q hsmsim; or return 0
    set -l cmd hsmsim
    set -l socket (__preloadrun_socket)
    test -n "$socket"; and set -a cmd --socket $socket
    command -q timeout; and set cmd timeout -k 1 2 $cmd
    # "hsmsim softcard list": a header line (NAME HASH), then "name hash".
    set -l lines ($cmd $argv[1] list </dev/null 2>/dev/null); or return 1
    string replace -r '\s.*' '' -- $lines[2..-1]
    return 0
end

# COMMAND's own completions for its arguments.
function __preloadrun_complete_command
    set -l where (__preloadrun_where)
    __fish_complete_subcommand --commandline $where[2..-1]
end

# Files only where a file is expected (forced with -F below).
complete -c preloadrun -f

set -l options '__preloadrun_at option'
complete -c preloadrun -n $options -s h -l help -d 'Print help and exit'
complete -c preloadrun -n $options -l version -d 'Print version and build information'
complete -c preloadrun -n $options -s s -l softcard -x -a '(__preloadrun_token_names softcard)' -d 'Load this softcard (name or hash)'
complete -c preloadrun -n $options -s c -l cardset -x -a '(__preloadrun_token_names cardset)' -d 'Load this card set (name or hash)'
complete -c preloadrun -n $options -l passphrase-file -r -F -d 'Passphrase from [TOKEN=]FILE'
complete -c preloadrun -n $options -l passphrase-fd -x -d 'Passphrases from descriptor FD, one line per token'
complete -c preloadrun -n $options -s f -l tokens-file -r -F -d 'Tokens file path'
complete -c preloadrun -n $options -l attach -r -F -d 'Run COMMAND against this live tokens file'
complete -c preloadrun -n $options -l group -x -a '(__fish_complete_groups)' -d 'Make the tokens file readable by GROUP'
complete -c preloadrun -n $options -l no-ha -d 'Load once: no reloading'
complete -c preloadrun -n $options -l retry-window -x -d 'How long to retry loading onto a module (e.g. 30s, 5m)'
complete -c preloadrun -n $options -l subreaper -d 'Adopt and reap orphaned descendants'
complete -c preloadrun -n $options -l process-group -d 'Forward signals to the process group of COMMAND'
complete -c preloadrun -n $options -l socket -r -F -d 'HSM service socket'
complete -c preloadrun -n $options -l log-level -x -a 'trace debug info warn error critical off' -d 'Log level'
complete -c preloadrun -n $options -s v -l verbose -d 'More log output'
complete -c preloadrun -n $options -s q -l quiet -d 'Less log output'


# The first word that is not an option: a subcommand or COMMAND.
complete -c preloadrun -n '__preloadrun_at first' -a check -d 'Is the tokens file live?'
complete -c preloadrun -n '__preloadrun_at first' -a status -d 'Show owner, tokens, modules, generation'
complete -c preloadrun -n '__preloadrun_at first' -a '(__fish_complete_subcommand --commandline (commandline -ct))'

# check|status [FILE]
complete -c preloadrun -n '__preloadrun_at subcommand' -F
complete -c preloadrun -n '__preloadrun_at subcommand' -s h -l help -d 'Print help and exit'
complete -c preloadrun -n '__preloadrun_at subcommand status' -l json -d 'JSON output'

# COMMAND's arguments.
complete -c preloadrun -n '__preloadrun_at command' -a '(__preloadrun_complete_command)'
