#!/bin/bash
# A Serf-compatible event handler: rebuilds a backend list from the full member view.
# Run with: shoal agent --event-handler "member-join,member-leave,member-failed,member-update=examples/handler.sh"
# Serf's variables work unchanged; shoal adds SHOAL_MEMBERS_FILE (the whole view as JSON).
echo "event: $SERF_EVENT on $SERF_SELF_NAME (role ${SERF_SELF_ROLE:-none})"
while read -r -a values; do
  echo "  changed: ${values[0]} at ${values[1]} role=${values[2]} tags=${values[3]}"
done
if [ -n "${SHOAL_MEMBERS_FILE:-}" ] && command -v python3 >/dev/null; then
  python3 - "$SHOAL_MEMBERS_FILE" <<'PY'
import json, sys
view = json.load(open(sys.argv[1]))
alive = [m for m in view["members"] if m["status"] == "alive" and m["tags"].get("role") == "web"]
for m in alive:
    print(f"  backend {m['name']} {m['addr']}")
PY
fi
