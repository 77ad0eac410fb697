"""The web portal's pages (server-rendered, HTMX for partial updates), one module per room:
catalog (browse, dataset page, request form), access (my requests and grants), inbox (approvals),
matrix (who has what) and dashboard (charts)."""
