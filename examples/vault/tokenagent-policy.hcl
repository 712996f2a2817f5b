# Least-privilege Vault policy for tokenagent (SPEC §6 layout, KV v2 mount "secret",
# prefix "tokenagent"). Change "secret" and "tokenagent" here if keys.vault.mount or
# keys.vault.prefix differ.
#
# The agent reads every record under its prefix (the latest version, older versions of the
# Auth Token key, and the metadata that lists versions and folders), and writes nothing but
# the just-in-time user directory, always with check-and-set.

# Records: latest and older versions (?version=N).
path "secret/data/tokenagent/*" {
  capabilities = ["read", "list"]
}

# Metadata: versions and their created_time (Auth Token key generations), and folder listings
# (browser tokens, issuers, identity providers, users).
path "secret/metadata/tokenagent/*" {
  capabilities = ["read", "list"]
}

# The user directory of every site: create and update (check-and-set writes), and read.
# A more specific path replaces the rule above for these paths, so read is repeated here.
path "secret/data/tokenagent/sites/+/users/*" {
  capabilities = ["create", "update", "read"]
}
