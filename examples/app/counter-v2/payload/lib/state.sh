# The state format of counter 2, sourced by bin/counter.
#
#   state/counter.conf   key=value lines:
#       count=17             the count
#       updated=1763868000   when the last request was counted (Unix seconds; 0 = never)
#
# No file yet (a fresh install) means nothing was counted. Version 1's
# state/count is refused: the transform function of version 2 converts it.
COUNTER_VERSION=2

state_load() { # DIR: sets count and updated, or explains on stderr why not
    conf=$1/counter.conf
    if [ ! -e "$conf" ]; then
        state_empty "$1" || return 1
        count=0 updated=0; return 0
    fi
    count= updated=
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            count=*) count=${line#count=} ;;
            updated=*) updated=${line#updated=} ;;
            *) echo "counter 2: $conf: unknown line '$line'" >&2; return 1 ;;
        esac
    done < "$conf"
    is_number "$count" || { echo "counter 2: $conf: count is not a number: '$count'" >&2; return 1; }
    is_number "$updated" || { echo "counter 2: $conf: updated is not a number: '$updated'" >&2; return 1; }
}

state_save() { # DIR: writes count and updated
    printf 'count=%s\nupdated=%s\n' "$count" "$updated" | write_file "$1" counter.conf
}
