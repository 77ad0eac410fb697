"""SCIM 2.0 server (RFC 7643/7644) for Users and Groups: an identity provider creates, updates and
offboards people and pushes its groups, which the group mappings turn into Role memberships."""
