"""Company identity: who people are and which groups they are in, as the identity provider says.

The group mappings (an IdP group -> a portal Role, or -> one of the portal's duties) and the one
sync that applies them are shared by every way the provider speaks to the portal: an OIDC sign-in
(the groups claim) and SCIM (Users and Groups pushed by the provider).
"""
