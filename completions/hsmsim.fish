# fish completion for hsmsim(1). Installed in a directory of
# $fish_complete_path (such as /usr/share/fish/vendor_completions.d), where
# fish loads it the first time hsmsim is completed.
#
#   hsmsim [GLOBAL OPTIONS] serve|softcard|cardset|key|module [SUBCOMMAND] ...
#
# The global options (--socket, --log-level, ...) are accepted after any
# subcommand too, so they are offered at every level.

# The subcommands under "hsmsim $argv" (no argument: the top level).
function __hsmsim_subcommands_of
    switch "$argv"
        case ''
            printf '%s\n' serve softcard cardset key module
        case softcard cardset
            printf '%s\n' create delete list
        case key
            printf '%s\n' generate delete list
        case module
            printf '%s\n' list clear fail restore remove drain undrain add latency fail-next
    end
end

# Walks the tokens before the cursor and prints two lines: the subcommands
# given, space-separated (e.g. "module clear"; empty at the top level), and
# how many positional arguments follow them.
function __hsmsim_where
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l path
    set -l nargs 0
    while set -q tokens[1]
        set -l token $tokens[1]
        set -e tokens[1]
        switch $token
            case --socket --admin-socket --log-level --fleet --kmdata --modules --op-latency-ms --init-delay-ms --max-objects-per-uid --max-keys-per-uid --max-tokens-per-uid --max-world-mib --max-connections --max-connections-per-uid --idle-timeout --passphrase-file --type --label --id --protect
                set -e tokens[1]
            case '-*'
            case '*'
                if contains -- $token (__hsmsim_subcommands_of $path)
                    set -a path $token
                else
                    set nargs (math $nargs + 1)
                end
        end
    end
    printf '%s\n' "$path" $nargs
end

# True when the subcommands given are $argv (e.g. "module clear"); with
# --nargs N, also when N positional arguments follow them.
function __hsmsim_at
    argparse -s 'nargs=' -- $argv; or return
    set -l where (__hsmsim_where)
    test "$where[1]" = "$argv"; or return
    not set -q _flag_nargs; or test "$where[2]" = "$_flag_nargs"
end

# The --socket given before the cursor (empty: none).
function __hsmsim_socket
    set -l tokens (commandline -opc)
    set -l socket
    while set -q tokens[1]
        switch $tokens[1]
            case --socket
                set socket $tokens[2]
            case '--socket=*'
                set socket (string replace -- --socket= '' $tokens[1])
        end
        set -e tokens[1]
    end
    printf '%s\n' $socket
end

# Asks the HSM service, quietly: runs "hsmsim [--socket S] $argv", with the
# --socket S given on the command line, and prints the first column of its
# table (the last column with --last first) without the header line. Prints
# nothing, quickly, when hsmsim is not installed, fails (then the status is
# 1), or does not answer within 2 s.
function __hsmsim_query
    set -l last
    if test "$argv[1]" = --last
        set last 1
        set -e argv[1]
    end
    # The program being completed: hsmsim, or hsmfleet (hsmfleet.fish).
    set -l program (commandline -opc)[1]
    contains -- (path basename -- "$program") hsmsim hsmfleet; or set program hsmsim
    command -q $program; or return 0
    set -l cmd $program
    set -l socket (__hsmsim_socket)
    test -n "$socket"; and set -a cmd --socket $socket
    command -q timeout; and set cmd timeout -k 1 2 $cmd
    set -l lines ($cmd $argv </dev/null 2>/dev/null); or return 1
    if test -n "$last"
        string replace -r '.*\s' '' -- $lines[2..-1]
    else
        string replace -r '\s.*' '' -- $lines[2..-1]
    end
    return 0
end

# --protect: module, softcard:NAME or cardset:NAME. When the service does
# not answer for the softcards, do not wait for it again.
function __hsmsim_protections
    echo module
    for kind in softcard cardset
        set -l names (__hsmsim_query $kind list); or break
        for name in $names
            echo $kind:$name
        end
    end
end

# Files only where a file is expected (forced with -F below).
complete -c hsmsim -f

# Global options, at every level.
complete -c hsmsim -s h -l help -d 'Print help and exit'
complete -c hsmsim -n '__hsmsim_at' -l version -d 'Print version and build information'
complete -c hsmsim -l socket -r -F -d 'Client socket'
complete -c hsmsim -l admin-socket -r -F -d 'Admin socket'
complete -c hsmsim -l log-level -x -a 'trace debug info warn error critical off' -d 'Log level'
complete -c hsmsim -s v -l verbose -d 'More log output'
complete -c hsmsim -s q -l quiet -d 'Less log output'

# hsmsim SUBCOMMAND
set -l top '__hsmsim_at'
complete -c hsmsim -n $top -a serve -d 'Run the HSM service in the foreground'
complete -c hsmsim -n $top -a softcard -d "Manage the world's softcards"
complete -c hsmsim -n $top -a cardset -d "Manage the world's cardsets"
complete -c hsmsim -n $top -a key -d "Manage the world's persistent keys"
complete -c hsmsim -n $top -a module -d 'Show and control the modules'

# hsmsim serve
set -l serve '__hsmsim_at serve'
# A fleet configuration: .toml files, and directories to look in.
function __hsmsim_toml_files
    for f in (commandline -ct)*
        if test -d $f
            echo $f/
        else if string match -q -- '*.toml' $f
            echo $f
        end
    end
end
complete -c hsmsim -n $serve -l fleet -x -a '(__hsmsim_toml_files)' -d 'Serve the PKCS#11 members of a fleet configuration'
complete -c hsmsim -n $serve -l simulate -d 'Serve simulated HSMs'
complete -c hsmsim -n $serve -l kmdata -x -a '(__fish_complete_directories)' -d 'Security World directory'
complete -c hsmsim -n $serve -l modules -x -d 'Modules enrolled on first start (1-128)'
complete -c hsmsim -n $serve -l op-latency-ms -x -d 'Latency of each operation, per module'
complete -c hsmsim -n $serve -l init-delay-ms -x -d 'Time a module stays initialising'
complete -c hsmsim -n $serve -l max-keys-per-uid -x -d 'Persistent keys one uid may create'
complete -c hsmsim -n $serve -l max-tokens-per-uid -x -d 'Softcards and card sets one uid may create'
complete -c hsmsim -n $serve -l max-world-mib -x -d "Size the world's files may reach, in MiB"
complete -c hsmsim -n $serve -l max-objects-per-uid -x -d 'Objects one user may hold on one module'
complete -c hsmsim -n $serve -l max-connections -x -d 'Connections the client socket serves at once'
complete -c hsmsim -n $serve -l max-connections-per-uid -x -d 'Connections one user may have open'
complete -c hsmsim -n $serve -l idle-timeout -x -d 'Close a connection idle this many seconds (0: never)'

# hsmsim softcard|cardset create|delete|list
for kind in softcard cardset
    complete -c hsmsim -n "__hsmsim_at $kind" -a create -d "Create a $kind"
    complete -c hsmsim -n "__hsmsim_at $kind" -a delete -d "Delete a $kind"
    complete -c hsmsim -n "__hsmsim_at $kind" -a list -d "List the world's $kind"s
    complete -c hsmsim -n "__hsmsim_at $kind create" -l passphrase-file -r -F -d 'Read the passphrase from this file'
    complete -c hsmsim -n "__hsmsim_at $kind delete" -l with-keys -d 'Delete the keys it protects with it'
    complete -c hsmsim -n "__hsmsim_at $kind delete" -l passphrase-file -r -F -d 'Read the passphrase from this file'
    complete -c hsmsim -n "__hsmsim_at --nargs 0 $kind delete" -a "(__hsmsim_query $kind list)" -d "Name of the $kind"
end

# hsmsim key generate|delete|list
complete -c hsmsim -n '__hsmsim_at key' -a generate -d 'Generate a persistent key'
complete -c hsmsim -n '__hsmsim_at key' -a delete -d 'Delete a persistent key'
complete -c hsmsim -n '__hsmsim_at key delete' -l passphrase-file -r -F -d 'Passphrase of the protecting token'
complete -c hsmsim -n '__hsmsim_at --nargs 0 key delete' -a '(__hsmsim_query --last key list)' -d 'Key ident'
complete -c hsmsim -n '__hsmsim_at key' -a list -d "List the world's persistent keys"
set -l generate '__hsmsim_at key generate'
complete -c hsmsim -n $generate -l type -x -a 'rsa-2048 rsa-3072 rsa-4096 ec-p256 ec-p384 aes-128 aes-192 aes-256' -d 'Key type'
complete -c hsmsim -n $generate -l label -x -d "The key's label (CKA_LABEL)"
complete -c hsmsim -n $generate -l id -x -d "The key's CKA_ID, in hex"
complete -c hsmsim -n $generate -l protect -x -a '(__hsmsim_protections)' -d 'module, softcard:NAME or cardset:NAME'
complete -c hsmsim -n $generate -l allow-duplicate -d 'Make it even if a key under the same protection has its label or id'
complete -c hsmsim -n $generate -l passphrase-file -r -F -d 'Passphrase of the protecting token'

# hsmsim module ...
set -l module '__hsmsim_at module'
complete -c hsmsim -n $module -a list -d 'List the modules, their state and counters'
complete -c hsmsim -n $module -a clear -d 'Clear module N: drop its objects, bump its generation'
complete -c hsmsim -n $module -a fail -d 'Make module N fail'
complete -c hsmsim -n $module -a restore -d 'Bring a failed or removed module N back'
complete -c hsmsim -n $module -a remove -d 'Remove module N from the fleet'
complete -c hsmsim -n $module -a drain -d 'Take module N out of service for maintenance'
complete -c hsmsim -n $module -a undrain -d 'Put a drained module N back in service'
complete -c hsmsim -n $module -a add -d 'Enrol a new module'
complete -c hsmsim -n $module -a latency -d "Set module N's per-operation latency"
complete -c hsmsim -n $module -a fail-next -d "Make module N's next COUNT operations fail transiently"
for action in clear fail restore remove drain undrain latency fail-next
    complete -c hsmsim -n "__hsmsim_at --nargs 0 module $action" -a '(__hsmsim_query module list)' -d 'Module number'
end

# --json of every list subcommand.
for kind in softcard cardset key module
    complete -c hsmsim -n "__hsmsim_at $kind list" -l json -d 'JSON output'
end
