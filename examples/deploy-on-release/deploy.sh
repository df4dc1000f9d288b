#!/bin/sh
# Stand-in deploy script used by rules/github.yaml: replace it with yours.
# $1 is the release tag; DEPLOY_REF is the commitish; HOOKWIRE_EVENT_ID names the event.
set -eu
echo "deploying ${1:?tag} (ref ${DEPLOY_REF:-unknown}, event ${HOOKWIRE_EVENT_ID:-none})"
