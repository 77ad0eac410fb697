"""The pieces of scripts/devstack.py, one module per concern.

helpers      project root, errors, Config (environment, then .env), ports, URLs, secrets, paths
supervision  Supervisor and Child: sessions, stop signals, the run lock
services     PostgreSQL and Redis: from the environment, a local server, or the embedded wheels
tools        console scripts of the virtualenv; Chromium, wrk and the test OpenID provider, installed
commands     run, env, test, lint and bench

Import time needs only the standard library and psycopg2, like the script itself.
"""
