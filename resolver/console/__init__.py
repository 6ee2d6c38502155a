"""The node's pages for people who sign in: the operator's dashboard (`/admin`), an enterprise's workspace
(`/ent`) and what keeps them safe (login, sessions, CSRF, headers, escaping). Server-rendered HTML that works
without JavaScript; every write goes through the HTTP API's own write functions (resolver/http/writes.py,
batch.py). routes.py hooks them into the aiohttp application."""
