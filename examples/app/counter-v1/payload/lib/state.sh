# The state format of counter 1, sourced by bin/counter.
#
#   state/count    the count as a bare decimal number: "17"
#
# No file yet (a fresh install) means nothing was counted: 0.
COUNTER_VERSION=1

state_load() { # DIR: sets count, or explains on stderr why the state is not understood
    if [ ! -e "$1/count" ]; then
        state_empty "$1" || return 1
        count=0; return 0
    fi
    count=$(cat "$1/count") || return 1
    is_number "$count" || { echo "counter 1: $1/count does not hold a count: '$count'" >&2; return 1; }
}

state_save() { # DIR: writes count
    echo "$count" | write_file "$1" count
}
