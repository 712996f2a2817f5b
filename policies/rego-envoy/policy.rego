# A Rego policy as OPA-Envoy users write it, run by tokenagent (SPEC §5a). Build the bundle:
#
#   opa build -t wasm -e envoy/authz/result -o bundle.tar.gz policy.rego data.json
#
# and point a site at it:
#
#   sites:
#     - id: docs
#       policy: bundle.tar.gz
#       policy_entrypoint: envoy/authz/result
#
# The input is OPA-Envoy's (input.attributes.request.http, input.parsed_path,
# input.parsed_query) plus what tokenagent verified: input.identity (site, kind, user,
# client_id, scopes) and input.time. The credentials themselves are never in the input.
package envoy.authz

import rego.v1

writes if input.attributes.request.http.method in {"POST", "PUT", "PATCH", "DELETE"}

# The site administration API: /@api/deki/site/...
site_api if {
	input.parsed_path[0] == "@api"
	input.parsed_path[1] == "deki"
	input.parsed_path[2] == "site"
}

editor if input.identity.user in data.sites[input.identity.site].editors

# The decision, in OPA-Envoy's object form: the first matching branch wins.
result := {"allowed": false, "http_status": 503, "body": "the site is read-only for maintenance", "headers": {"retry-after": "600"}} if {
	writes
	data.maintenance
} else := {"allowed": false, "http_status": 403, "body": "the site API takes server tokens only"} if {
	site_api
	input.identity.kind != "server"
} else := {"allowed": true} if {
	not writes
} else := {"allowed": true, "headers": {"x-editor": input.identity.user}} if {
	editor
} else := {"allowed": false, "http_status": 403, "body": "writes need an editor of the site"}
