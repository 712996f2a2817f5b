#!/usr/bin/env python3
"""Make a MindTouch / CXone Server API Token (SPEC §3.2) with Python's standard library only,
print it, or send one request with it.

    python3 server_token.py KEY SECRET USER
    python3 server_token.py --url https://docs.example.com/@api/deki/users/current KEY SECRET USER

USER is a decimal user id (42) or "=" and a username (=jane.doe), given as it is: the username
is URL-encoded here. --epoch sets the token's time (Unix seconds; default now).

The token is tkn_{key}_{epoch}_{user}_{sig}, where sig is the hex HMAC-SHA256 of
"{key}_{epoch}_{user}" keyed with the UTF-8 bytes of the key's secret, and user is as it stands
in the token (still encoded). It is valid for server_token_window (default 5 min) around epoch:
make a new one per request, or at least every few minutes.

In real code, read the secret from your secret store, not from the command line.
"""

import argparse
import hashlib
import hmac
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

_KEY = re.compile(r"[A-Za-z0-9]{1,64}")
_USER_ID = re.compile(r"[0-9]{1,19}")


def server_token(key, secret, user, epoch=None):
    """Return a Server API Token for key and secret acting as user (a decimal id, or "=" and a
    username, URL-encoded here) made at epoch (Unix seconds, default now)."""
    if not _KEY.fullmatch(key):
        raise ValueError("key must be 1 to 64 letters and digits")
    if len(user) > 1 and user.startswith("="):
        # Space as "+", every byte but letters, digits and -_.~ as %XX: like `tokenagent mint`.
        user = "=" + urllib.parse.quote_plus(user[1:], safe="")
    elif not _USER_ID.fullmatch(user):
        raise ValueError('user must be a decimal id (1 to 19 digits) or "=" and a username')
    if epoch is None:
        epoch = int(time.time())
    msg = f"{key}_{int(epoch)}_{user}"
    sig = hmac.new(secret.encode("utf-8"), msg.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"tkn_{msg}_{sig}"


def get(url, token):
    """Send GET url with the token; return the answer's status and body."""
    req = urllib.request.Request(url, headers={"X-Deki-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as e:  # 4xx and 5xx still carry the answer
        return e.code, e.read(1 << 20)


def main(argv=None):
    p = argparse.ArgumentParser(description="Make a Server API Token, or send one request with it.")
    p.add_argument("key")
    p.add_argument("secret")
    p.add_argument("user", help='a decimal user id, or "=" and a username')
    p.add_argument("--epoch", type=int, help="the token's time, Unix seconds (default now)")
    p.add_argument("--url", help="send one GET request to this URL with the token in X-Deki-Token")
    a = p.parse_args(argv)
    try:
        token = server_token(a.key, a.secret, a.user, a.epoch)
    except ValueError as e:
        p.error(str(e))
    if not a.url:
        print(token)
        return 0
    status, body = get(a.url, token)
    print(f"HTTP {status}")
    print(body.decode("utf-8", "replace"))
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
