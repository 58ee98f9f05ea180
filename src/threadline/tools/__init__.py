"""Tools: the server's reach outside itself on a user's behalf (fetching linked pages).

Everything here treats its input as hostile: `fetcher.SafeFetcher` is the one way the server
fetches an untrusted URL.
"""
