#!/usr/bin/env python3
"""Writes the first inputs of each corpus under fuzz/corpus/TARGET/seed-*: hand-made cases the
fuzzers start from (docs/fuzzing.md). Run again only to add seeds; campaigns add the rest."""
import os
import ssl
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def lp(text):
    """A length-prefixed string in proxy_fuzz::input's encoding (a length byte, then bytes)."""
    b = text.encode() if isinstance(text, str) else text
    assert len(b) < 256
    return bytes([len(b)]) + b


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def client_hello(sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def main():
    for i, h in enumerate([b"example.com", b"[::1]:443", b"0x7f.1", "bücher.example".encode(),
                           b"[fe80::1%25Eth0]:80", b"127.0.0.1:8080", b"a..b", b"Example.COM.",
                           b"2130706433", b"[::ffff:10.0.0.1]", b"::1"]):
        write("host", str(i), h)

    # policy: allow list, deny list, local binding, mode, treat_as_public, own, request.
    def policy(allow, deny, host, port=443, addrs=(), local=0, limited=0):
        out = bytes([len(allow)]) + b"".join(lp(p) for p in allow)
        out += bytes([len(deny)]) + b"".join(lp(p) for p in deny)
        out += bytes([local, limited, 0, 0])  # no treat_as_public, no own addresses
        out += bytes([1]) + lp(host) + port.to_bytes(2, "big") + bytes([0])
        out += bytes([len(addrs)])
        for kind, tail in addrs:  # kind 0: IPv4 near NEAR[tail[0]]
            out += bytes([kind]) + bytes(tail)
        return out
    write("policy", "wildcard", policy(["**.example.com"], ["evil.example.com"], "api.example.com",
                                       addrs=[(0, [9, 1, 2]), (0, [0, 0, 1])]))
    write("policy", "literal", policy(["127.0.0.1", "*.local.test"], [], "127.0.0.1:8080"))
    write("policy", "deny-ip", policy(["*"], ["10.0.0.1"], "a.test", addrs=[(0, [1, 0, 1])]))
    write("policy", "ports", policy(["localhost:3000-3999"], [], "localhost:3001"))

    cfg = open(os.path.join(HERE, "..", "packaging", "config.toml"), "rb").read()
    write("config", "packaging", cfg)
    write("config", "layers", b'[network]\nmode = "limited"\n[network.domains]\n"**.github.com" = "allow"\n'
          b'"evil.github.com" = "deny"\n\xff[network.limits]\nidle_timeout_s = 30\n\xff'
          b'[network]\nallowed_domains = ["**.github.com"]\nmode = "limited"\n\xffenabled=true')
    write("config", "hooks", b'[network]\nmitm = true\n[network.domains]\n"api.github.com" = "allow"\n'
          b'[network.mitm.hooks.issues]\nhost = "api.github.com"\nmethods = ["GET"]\n'
          b'path_prefixes = ["/repos/"]\n')

    def hook(methods, prefixes, method, path, query=None):
        out = bytes([len(methods) - 1]) + bytes(methods)
        out += bytes([len(prefixes) - 1]) + b"".join(lp(p) for p in prefixes)
        out += bytes([0, 0])  # no query, no header constraint
        out += bytes([method]) + lp(path)
        out += (bytes([1]) + lp(query)) if query is not None else bytes([0])
        return out + bytes([0])
    write("hooks", "plain", hook([0], ["/repos/"], 0, "/repos/a/issues"))
    write("hooks", "dots", hook([0], ["/repos/"], 0, "/repos/%2e%2e/admin"))
    write("hooks", "glob", hook([0, 1], ["pattern:/repos/*/issues*"], 1, "/repos/x/issues", "state=open"))

    for i, sni in enumerate(["api.example.com", "localhost"]):
        write("hello", str(i), client_hello(sni))
    write("hello", "http", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")

    write("otlp", "empty", b"")
    write("otlp", "some", bytes(range(0, 256)) * 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
