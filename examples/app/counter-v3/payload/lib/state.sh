# The state format of counter 3, sourced by bin/counter.
#
#   state/counter.state   a header line naming the format, then "name value" lines;
#                         version 2's fields are renamed:
#       counter-state 3
#       requests 17              (was count=)
#       last-request 1763868000  (was updated=; 0 = never)
#
# No file yet (a fresh install) means nothing was counted. Version 2's
# state/counter.conf is refused: the transform function of version 3 converts it.
COUNTER_VERSION=3

state_load() { # DIR: sets count and updated, or explains on stderr why not
    file=$1/counter.state
    if [ ! -e "$file" ]; then
        state_empty "$1" || return 1
        count=0 updated=0; return 0
    fi
    header=$(head -n 1 "$file")
    [ "$header" = "counter-state 3" ] || {
        echo "counter 3: $file starts with '$header', not 'counter-state 3'" >&2; return 1; }
    count= updated=
    while read -r name value; do
        case $name in
            "") ;;                                # a blank line
            requests) count=$value ;;
            last-request) updated=$value ;;
            *) echo "counter 3: $file: unknown field '$name'" >&2; return 1 ;;
        esac
    done <<END
$(tail -n +2 "$file")
END
    is_number "$count" || { echo "counter 3: $file: requests is not a number: '$count'" >&2; return 1; }
    is_number "$updated" || { echo "counter 3: $file: last-request is not a number: '$updated'" >&2; return 1; }
}

state_save() { # DIR: writes the header, requests and last-request
    printf 'counter-state 3\nrequests %s\nlast-request %s\n' "$count" "$updated" | write_file "$1" counter.state
}
