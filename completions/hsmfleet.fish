# fish completion for hsmfleet(1): the completions of hsmsim, the same
# program (hsmsim.fish, in the same directory of $fish_complete_path), which
# ask the service with the program being completed.
complete -c hsmfleet --wraps hsmsim
