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


def write(target, name, data, kind="corpus"):
    d = os.path.join(HERE, kind, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ("seed-" if kind == "corpus" else "") + name), "wb") as f:
        f.write(data)


def regression(target, name, data):
    """An input that once failed (fuzz/regressions/TARGET/NAME), replayed like the corpus."""
    write(target, name, data, kind="regressions")


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

    # socks_request: no credential (0) or one (1, user, password); bytes per read; 1 = raw.
    def greet(methods):
        return bytes([5, len(methods)]) + bytes(methods)

    def request(cmd, addr, port):
        return bytes([5, cmd, 0]) + addr + port.to_bytes(2, "big")

    def rfc1929(user, password):
        return bytes([1, len(user)]) + user + bytes([len(password)]) + password
    v4 = bytes([1, 127, 0, 0, 1])
    v6 = bytes([4]) + bytes(15) + bytes([1])
    def domain(name):
        return bytes([3, len(name)]) + name
    no_auth = bytes([0, 3, 1])
    auth = bytes([1]) + lp("netproxy") + lp("s3cret") + bytes([3, 1])
    socks_cases = {
        "connect-v4": no_auth + greet([0]) + request(1, v4, 80),
        "connect-v6": no_auth + greet([0, 2]) + request(1, v6, 443),
        "connect-name": no_auth + greet([0]) + request(1, domain(b"Example.COM."), 443),
        "connect-bad-name": no_auth + greet([0]) + request(1, domain(b"a..b"), 443),
        "udp": no_auth + greet([0]) + request(3, v4, 0),
        "bind": no_auth + greet([0]) + request(2, v4, 0),
        "atyp": no_auth + greet([0]) + bytes([5, 1, 0, 9, 1, 2]),
        "auth": auth + greet([2]) + rfc1929(b"netproxy", b"s3cret") + request(1, domain(b"a.test"), 80),
        "auth-wrong": auth + greet([0, 2]) + rfc1929(b"netproxy", b"s3creT") + request(1, v4, 80),
        "auth-none": auth + greet([0]) + request(1, v4, 80),
    }
    for name, data in socks_cases.items():
        write("socks_request", name, data)

    # socks_udp: 1 = raw datagram.
    def datagram(frag, addr, port, payload):
        return bytes([0, 0, frag]) + addr + port.to_bytes(2, "big") + payload
    write("socks_udp", "v4", b"\x01" + datagram(0, v4, 53, b"query"))
    write("socks_udp", "v6", b"\x01" + datagram(0, v6, 53, b"query"))
    write("socks_udp", "name", b"\x01" + datagram(0, domain(b"dns.test"), 53, b"q"))
    write("socks_udp", "frag", b"\x01" + datagram(1, v4, 53, b"query"))
    write("socks_udp", "rsv", b"\x01\x00\x01\x00\x01\x7f\x00\x00\x01\x00\x35")
    write("socks_udp", "short", b"\x01\x00\x00\x00\x04\x00\x00")

    # unix_header: how many values, then each: 0 = bytes, 1 = pieces, 2 = near the bound.
    write("unix_header", "absolute", bytes([1, 0]) + lp(" /run/docker.sock "))
    write("unix_header", "relative", bytes([1, 0]) + lp("docker.sock"))
    write("unix_header", "nul", bytes([1, 0]) + lp("/run/a\0.sock"))
    write("unix_header", "two", bytes([2, 0]) + lp("/a") + bytes([0]) + lp("/b"))
    write("unix_header", "pieces", bytes([1, 1, 4, 1, 2, 0, 6]))
    write("unix_header", "long", bytes([1, 2, 2]))
    write("unix_header", "utf8", bytes([1, 0]) + lp("/run/\u00fc.sock"))

    # proxy_auth: user, password, how many values, then each: 0 = bytes, 1 = a scheme and
    # bytes, 2 = a scheme and the base64 of the credential (changed or not).
    cred = lp("netproxy") + lp("s3cret")
    write("proxy_auth", "right", cred + bytes([0, 0]) + lp("Basic bmV0cHJveHk6czNjcmV0"))
    write("proxy_auth", "wrong", cred + bytes([0, 0]) + lp("Basic Zm9vOmJhcg=="))
    write("proxy_auth", "built", cred + bytes([1, 2, 0, 7, 7, 3, 1, 0, 4, 4]))
    write("proxy_auth", "empty-password", lp("user") + lp("") + bytes([0, 0]) + lp("Basic dXNlcg=="))
    write("proxy_auth", "bytes", cred + bytes([0, 0]) + lp(b"Basic \xff\xfe==="))

    # http_wire: header timeout, idle timeout, max head, credential, gate verdict, origin,
    # interceptor accepts, pacing (chunks: cut and pause; closes), 1 = raw client bytes.
    def http(verdict, origin, client, auth=0, pacing=bytes([0, 255, 0, 1]), accepts=1):
        return bytes([0, 0, 1, auth, verdict, origin, accepts]) + pacing + b"\x01" + client
    get = b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n"
    connect = b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n"
    post = b"POST http://a.test/p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (b"POST http://a.test/p HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
    ws = (b"GET http://a.test/chat HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\n"
          b"Upgrade: websocket\r\n\r\nping")
    unix = b"GET http://localhost/v1.41/info HTTP/1.1\r\nHost: localhost\r\nx-unix-socket: /run/a.sock\r\n\r\n"
    hello = client_hello("a.test")
    write("http_wire", "get-denied", http(0, 2, get))
    write("http_wire", "get-allowed", http(2, 2, get + get))
    write("http_wire", "get-stalled", http(2, 6, get))
    write("http_wire", "get-upstream-proxy", http(6, 2, get))
    write("http_wire", "post", http(2, 2, post + chunked))
    write("http_wire", "connect-echo", http(2, 4, connect + b"ping"))
    write("http_wire", "connect-intercept", http(4, 4, connect + b"ping"))
    write("http_wire", "connect-sni", http(5, 4, connect + hello))
    write("http_wire", "connect-refused", http(2, 0, connect))
    write("http_wire", "connect-failed", http(7, 4, connect))
    write("http_wire", "websocket", http(2, 2, ws))
    write("http_wire", "unix", http(2, 2, unix))
    write("http_wire", "auth-missing", http(2, 2, get, auth=1))
    write("http_wire", "auth", http(2, 2, b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n"
                                          b"Proxy-Authorization: Basic bmV0cHJveHk6czNjcmV0\r\n\r\n", auth=1))
    write("http_wire", "slow", http(2, 2, get, pacing=bytes([2, 40, 5, 120, 6, 255, 0, 0])))
    write("http_wire", "held-open", http(2, 2, get, pacing=bytes([0, 255, 0, 0])))
    write("http_wire", "big-head", http(0, 2, b"GET http://a.test/ HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"))
    write("http_wire", "garbage", http(2, 2, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
    write("http_wire", "partial-response", http(2, 8, get))
    write("http_wire", "post-partial-denied",
          http(0, 2, b"POST http://a.test/p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 70000\r\n\r\nhello",
               pacing=bytes([0, 255, 0, 0])))
    write("http_wire", "expect-continue",
          http(2, 2, b"PUT http://a.test/p HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 5\r\n\r\nhello"))
    write("http_wire", "pipelined-then-connect", http(2, 4, get + post + connect + b"ping"))
    write("http_wire", "http10", http(2, 2, b"GET http://a.test/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
    write("http_wire", "built", bytes([1, 1, 0, 0, 2, 2, 1, 0, 255, 0, 1, 0, 1, 0, 0, 1, 0, 1, 2, 4, 5, 0, 0]))

    # socks_wire: header timeout, idle timeout, credential (0, or 1 and which), UDP (0 off,
    # 1 no relay socket, 3 loopback), gate verdict, origin, interceptor accepts, pacing,
    # 1 = raw client bytes.
    def socks(verdict, origin, client, cred=b"\x00", udp=0, pacing=bytes([0, 255, 0, 1]), accepts=1):
        return bytes([0, 0]) + cred + bytes([udp, verdict, origin, accepts]) + pacing + b"\x01" + client
    c4 = greet([0]) + request(1, v4, 80)
    cname = greet([0]) + request(1, domain(b"a.test"), 443)
    write("socks_wire", "connect-denied", socks(0, 4, c4))
    write("socks_wire", "connect-echo", socks(2, 4, c4 + b"ping"))
    write("socks_wire", "connect-banner", socks(2, 7, cname))
    write("socks_wire", "connect-refused", socks(2, 0, c4))
    write("socks_wire", "connect-failed", socks(8, 4, c4))
    write("socks_wire", "connect-intercept", socks(4, 4, cname + b"ping"))
    write("socks_wire", "connect-sni", socks(5, 4, cname + hello))
    write("socks_wire", "bad-name", socks(2, 4, greet([0]) + request(1, domain(b"a b"), 80)))
    write("socks_wire", "udp-off", socks(2, 4, greet([0]) + request(3, v4, 0)))
    write("socks_wire", "udp-no-relay", socks(2, 4, greet([0]) + request(3, v4, 0), udp=1))
    write("socks_wire", "udp-loopback", socks(2, 4, greet([0]) + request(3, v4, 0), udp=3))
    write("socks_wire", "auth", socks(2, 4, greet([2]) + rfc1929(b"netproxy", b"s3cret") + request(1, v4, 80),
                                      cred=b"\x01\x00\x00"))
    write("socks_wire", "auth-wrong", socks(2, 4, greet([2]) + rfc1929(b"u", b"p") + request(1, v4, 80),
                                            cred=b"\x01\x00\x00"))
    write("socks_wire", "slow", socks(2, 4, c4, pacing=bytes([1, 30, 6, 255, 7, 0])))
    write("socks_wire", "held-open", socks(2, 4, c4 + b"ping", pacing=bytes([0, 255, 0, 0])))

    # Inputs that found bugs (crates/proxy-fuzz/tests/regressions.rs says which).
    held = bytes([0, 255, 0, 0])
    regression("proxy_auth", "basic-without-colon",
               lp("user") + lp("") + bytes([0, 0]) + lp("Basic dXNlcg=="))
    regression("socks_wire", "idle-tunnel-on-a-paused-clock",
               socks(2, 4, c4 + b"ping", pacing=held))
    regression("http_wire", "response-body-stalls",
               http(2, 8, get, pacing=held))
    regression("http_wire", "request-body-stalls-after-the-answer",
               http(2, 2, b"POST http://a.test/p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 70000\r\n\r\nhello",
                    pacing=held))
    regression("http_wire", "chunked-request-body-stalls-after-the-answer",
               http(2, 2, b"POST http://a.test/p HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                    pacing=held))
    return 0


if __name__ == "__main__":
    sys.exit(main())
