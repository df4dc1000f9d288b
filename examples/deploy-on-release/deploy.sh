#!/bin/sh
# Stand-in deploy script used by rules/github.yaml and this example: replace
# it with yours. $1 is the release tag; DEPLOY_REF is the commitish;
# HOOKWIRE_EVENT_ID names the event.
#
# Progress goes to stderr. stdout is what a step reads: one JSON object
# (`steps.deploy.json` in the rule that announces the deploy).
set -eu
tag=$(printf '%s' "${1:?tag}" | tr -d '"\\')
echo "deploying $tag (ref ${DEPLOY_REF:-unknown}, event ${HOOKWIRE_EVENT_ID:-none})" >&2
printf '{"tag": "%s", "url": "%s/releases/%s"}\n' "$tag" "${DEPLOY_SITE:-https://staging.example.com}" "$tag"
