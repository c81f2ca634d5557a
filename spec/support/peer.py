#!/usr/bin/python3
"""A test peer for the module's specs: a real HTTP server (aiohttp.web) on
loopback that records what clients do (connections, concurrency, arrival
order) and misbehaves on request (resets, stalls, short bodies, bad status
lines). Prints "peer listening on http://HOST:PORT" when ready."""
import asyncio
import ctypes
import email.utils
import gzip
import json
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import zlib

from aiohttp import web

state = {"connections": set(), "active": 0, "max_active": 0, "by_host": {}, "order": []}


def count_in(host):
    state["active"] += 1
    state["max_active"] = max(state["max_active"], state["active"])
    h = state["by_host"].setdefault(host, {"active": 0, "max": 0, "count": 0})
    h["active"] += 1
    h["count"] += 1
    h["max"] = max(h["max"], h["active"])
    return h


@web.middleware
async def track(request, handler):
    state["connections"].add(id(request.transport))
    return await handler(request)


async def hold(request):
    """Hold the request ms milliseconds, counting concurrency per Host."""
    ms = int(request.query.get("ms", "0"))
    state["order"].append(request.query.get("tag", ""))
    h = count_in(request.host)
    try:
        await asyncio.sleep(ms / 1000)
    finally:
        h["active"] -= 1
        state["active"] -= 1
    return web.json_response({"tag": request.query.get("tag", "")})


async def stats(request):
    return web.json_response({
        "connections": len(state["connections"]), "max_active": state["max_active"],
        "active": state["active"], "by_host": state["by_host"], "order": state["order"]})


async def reset_stats(request):
    state.update(connections=set(), active=0, max_active=0, by_host={}, order=[])
    return web.json_response("ok")


async def echo(request):
    body = await request.read()
    seen = {
        "method": request.method, "path": request.path, "query_string": request.query_string,
        "query": {k: request.query.getall(k) for k in request.query.keys()},
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "header_list": [[k.lower(), v] for k, v in request.headers.items()],
        "body": body.decode("utf-8", "replace")}
    state["last_echo"] = seen
    return web.json_response(seen)


async def last_echo(request):
    """What /echo saw last: the only way to see a HEAD request's answer."""
    return web.json_response(state.get("last_echo"))


async def status(request):
    code = int(request.match_info["code"])
    return web.json_response({"status": code}, status=code)


async def redirect(request):
    raise web.HTTPFound(request.query["to"])


async def redirect_loop(request):
    raise web.HTTPFound("/redirect-loop")


async def redirect_code(request):
    """Any method: answer with the status in the path and Location: `to`
    (default /echo), after `ms` milliseconds, with a body of its own."""
    await request.read()
    await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"{code} redirect body",
                        headers={"Location": request.query.get("to", "/echo")})


async def redirect_unread(request):
    """Any method: answer with the status in the path and Location: `to` at
    once, without reading the request's body (a body still being sent)."""
    code = int(request.match_info["code"])
    return web.Response(status=code, headers={"Location": request.query["to"]})


async def chain(request):
    """Any method: n redirects (status `code`, default 302; `ms` each), then /echo."""
    n = int(request.match_info["n"])
    if n <= 0:
        return await echo(request)
    await request.read()
    await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
    to = f"/chain/{n - 1}?{request.query_string}" if n > 1 else "/echo"
    return web.Response(status=int(request.query.get("code", "302")), headers={"Location": to})


async def raw(request, data, close=True):
    """Write raw bytes on the connection, then abort it."""
    transport = request.transport
    transport.write(data)
    await asyncio.sleep(0.05)
    if close:
        transport.abort()
    return web.Response()  # never sent: the connection is gone


async def reset_before(request):
    request.transport.abort()
    await asyncio.sleep(0.05)
    return web.Response()


async def reset_mid(request):
    return await raw(request, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)


async def short(request):
    return await raw(request, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")


async def chunked_cut(request):
    """A chunked body cut off inside its second chunk."""
    return await raw(request, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nabc")


async def status_trailer(request):
    """A chunked body, then a trailer that looks like a status line (libcurl
    hands trailers to the header callback): it must stay a trailer."""
    body = b"a" * 1000
    return await raw(request, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\n\r\n"
                     + b"%x\r\n" % len(body) + body + b"\r\n0\r\nHTTP/1.1 200 OK: x\r\n\r\n")


async def redirect_big(request):
    """A redirect whose own body is 300 kB: nobody reads it."""
    return web.Response(status=302, headers={"Location": "/big?bytes=10"}, body=b"r" * 300000)


DIGEST_NONCES = {}  # realm -> the nonces this peer issued under it


async def digest(request):
    """Digest auth under realm {realm} that takes only nonces it issued
    under that realm, as a real server does: a client that sends another
    server's nonce (say, one libcurl kept on a pooled handle) gets 401."""
    realm = request.match_info["realm"]
    issued = DIGEST_NONCES.setdefault(realm, set())
    auth = request.headers.get("Authorization", "")
    m = re.search(r'nonce="([^"]+)"', auth)
    if auth.startswith("Digest ") and m and m.group(1) in issued and f'realm="{realm}"' in auth:
        return web.json_response({"authenticated": True, "realm": realm})
    nonce = secrets.token_hex(8)
    issued.add(nonce)
    return web.Response(status=401, text="need auth", headers={
        "WWW-Authenticate": f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5'})


async def two_spaces(request):
    """A status line with two spaces after the version, which libcurl
    accepts: the response is a 200 with its body."""
    return await raw(request, b"HTTP/1.1  200 OK\r\nContent-Length: 5\r\n\r\nhello")


async def bare_cr(request):
    """A bare CR inside a header value and a folded (obsolete) line: one
    header each, never a header of the CR's making."""
    return await raw(request, b"HTTP/1.1 200 OK\r\nX-A: foo\rSet-Cookie: evil=1\r\nX-Fold: one\r\n two\r\n"
                              b"Content-Length: 2\r\n\r\nhi")


async def bad_trailer(request):
    """A chunked body whose trailer line has no colon."""
    return await raw(request, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"2\r\nhi\r\n0\r\nBadTrailerNoColon\r\n\r\n")


async def bad_chunk(request):
    """A chunk size that is not hexadecimal."""
    return await raw(request, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n")


async def many_headers(request):
    """n short header lines (default 30,000: over 300 KiB in all)."""
    n = int(request.query.get("n", "30000"))
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(n))
    return await raw(request, b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 0\r\n\r\n")


async def length_and_chunked(request):
    """Content-Length and Transfer-Encoding: chunked together."""
    return await raw(request, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"2\r\nhi\r\n0\r\n\r\n")


async def basic_only(request):
    """A 401 that offers Basic only: to a Digest client, the response."""
    return web.Response(status=401, text="denied", headers={"WWW-Authenticate": 'Basic realm="x"'})


DIGEST_STALE = {}  # key -> requests seen


async def digest_stale(request):
    """A Digest challenge that calls every nonce stale, for ever; with
    ?count=1, how many requests came under key=K."""
    key = request.query.get("key", "")
    if request.query.get("count"):
        return web.json_response(DIGEST_STALE.get(key, 0))
    DIGEST_STALE[key] = DIGEST_STALE.get(key, 0) + 1
    nonce = secrets.token_hex(8)
    return web.Response(status=401, text="stale again", headers={
        "WWW-Authenticate": f'Digest realm="stale", nonce="{nonce}", qop="auth", stale=true'})


async def bad_status(request):
    return await raw(request, b"HTTP/1.1 abc\r\nbroken\r\n\r\n")


async def stall(request):
    """Headers at once, then nothing for 30 s: a sock_read timeout. The
    handler ends as soon as the client goes, so stalls do not pile up."""
    resp = web.StreamResponse(headers={"Content-Length": "10"})
    await resp.prepare(request)
    for _ in range(300):
        await asyncio.sleep(0.1)
        if request.transport is None or request.transport.is_closing():
            break
    return resp


async def drip(request):
    """A byte every 50 ms forever: only a total timeout ends it."""
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    while True:
        await resp.write(b"x")
        await asyncio.sleep(0.05)


async def big(request):
    """bytes=N of "x", after ms=M milliseconds (0 by default): a server
    whose own part is steady, however slowly the body is read."""
    await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
    return web.Response(body=b"x" * int(request.query["bytes"]))


GZIP_BOMB = {}  # MiB -> the body, made once


def _gzip_zeros(mib):
    """gzip of `mib` MiB of zeros (a multiple of 16), made fast: one
    byte-aligned deflate block of 16 MiB of zeros (16 KiB: 1028 times
    smaller), repeated, then an empty final block and the trailer (CRC-32
    and size)."""
    if mib not in GZIP_BOMB:
        zeros = b"\0" * (16 << 20)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
        crc = 0
        for _ in range(mib // 16):
            crc = zlib.crc32(zeros, crc)
        final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
        GZIP_BOMB[mib] = (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + block * (mib // 16) + final
                          + struct.pack("<II", crc, (mib // 16 << 24) & 0xFFFFFFFF))
    return GZIP_BOMB[mib]


async def gzip_bomb(request):
    """A gzip body that expands a thousand times: mib=N MiB of zeros
    (default 512) in about N KiB."""
    body = _gzip_zeros(int(request.query.get("mib", "512")))
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"})


async def gzip_cut(request):
    """A gzip body without its last bytes (its end and trailer)."""
    body = gzip.compress(b"x" * 100000)[:-12]
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


async def deflated(request):
    """{"deflated": true} as deflate: zlib-wrapped, as HTTP says, or raw
    (?raw=1), as some servers send it."""
    data = json.dumps({"deflated": True}).encode()
    if request.query.get("raw"):
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = c.compress(data) + c.flush()
    else:
        body = zlib.compress(data)
    coding = request.query.get("coding", "deflate")
    return web.Response(body=body, headers={"Content-Encoding": coding, "Content-Type": "application/json"})


async def gzip_members(request):
    """A gzip body of two members (as pigz writes, or cat of two .gz
    files), ?junk=1: one member and bytes that are no gzip after it, or
    ?short=1: one member, then the connection closes 100 bytes short of
    the Content-Length."""
    one, two = gzip.compress(b"a" * 70000), gzip.compress(b"b" * 70000)
    if request.query.get("junk"):
        body = one + b"junk after the end"
    elif request.query.get("short"):
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % (len(one) + 100)
        return await raw(request, head + one)
    else:
        body = one + two
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


async def gzipped(request):
    """A JSON document compressed whatever the request accepted: the client
    must decode it (Content-Encoding: gzip)."""
    body = gzip.compress(json.dumps({"compressed": True, "accept": request.headers.get("Accept-Encoding")}).encode())
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


async def bad_gzip(request):
    """Says gzip, sends bytes that are not: decoding must fail cleanly."""
    return web.Response(body=b"not gzip at all", headers={"Content-Encoding": "gzip"})


async def text(request):
    return web.Response(text="this is not json {", content_type="application/json")


async def status_only(request):
    """A status line and nothing after it: no header block, then close."""
    return await raw(request, b"HTTP/1.1 200 OK\r\n")


async def headers_cut(request):
    """A header block cut short: no blank line before the close."""
    return await raw(request, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")


async def two_lengths(request):
    """Two Content-Length headers that disagree (RFC 9112 6.3: an error)."""
    return await raw(request, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")


async def same_lengths(request):
    """Content-Length twice with one value: allowed, the body is 5 bytes."""
    return await raw(request, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n"
                              b"Connection: close\r\n\r\nhello", close=False)


async def interim_only(request):
    """A 1xx answer and no final response, as httpbin's /status/100 does:
    what follows (here a body) is not a status line."""
    return await raw(request, b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello")


async def big_header(request):
    """A response header line of `bytes` bytes (default 1 MiB)."""
    n = int(request.query.get("bytes", str(1 << 20)))
    return await raw(request, b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * n + b"\r\nContent-Length: 0\r\n\r\n")


def _after(ms, fn, *args):
    asyncio.get_running_loop().call_later(ms / 1000, fn, *args)


async def chaos(request):
    """Answers {"id": id} on a kept-alive connection and then misbehaves as
    `fault` says: junk (unsolicited bytes that look like a response, `ms`
    after the answer), close (the idle connection closed after `ms`), reset
    (the connection reset halfway through the body), slow (the answer after
    `ms`), short (a body shorter than its Content-Length), or none."""
    rid = request.query.get("id", "")
    fault = request.query.get("fault", "none")
    ms = int(request.query.get("ms", "5"))
    body = json.dumps({"id": rid, "pad": "x" * 200}).encode()
    transport = request.transport
    if fault == "reset":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        transport.write(head + body[: len(body) // 2])
        await asyncio.sleep(0.005)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # RST, not FIN: SO_LINGER 0
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        transport.abort()
        return web.Response()
    if fault == "excess":
        # the answer and, in the same write, bytes that look like another
        # one; aiohttp's own answer follows them
        junk = json.dumps({"id": "excess-after-" + rid}).encode()
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                        % len(body) + body +
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(junk) + junk)
        return web.json_response({"id": "aiohttp-after-" + rid})
    if fault == "short":
        return await raw(request, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
    if fault == "slow":
        await asyncio.sleep(ms / 1000)
    elif fault == "junk":
        junk = json.dumps({"id": "junk-after-" + rid}).encode()
        _after(ms, transport.write, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(junk) + junk)
    elif fault == "close":
        _after(ms, transport.close)
    return web.Response(body=body, content_type="application/json")


flaky_counts = {}


async def flaky(request):
    """Any method, for retries: the first `fail` requests with this key
    fail as `mode` says, then the next ones answer 200 after `ms`. Modes:
    status (answer `status`, default 503, after `stall_ms`; with
    Retry-After: `retry_after` as given, or an HTTP date `retry_after_date`
    seconds from now), reset (the connection aborted before any answer) or
    cut (a body cut short by the close). `close=1` closes the connection
    after the 200 (libcurl sends a request again by itself when a reused
    connection dies before any answer). Every JSON answer gives the
    attempt's number; /flaky-count/{key} how many came."""
    await request.read()
    key = request.match_info["key"]
    n = flaky_counts.get(key, 0) + 1
    flaky_counts[key] = n
    q = request.query
    if n <= int(q.get("fail", "0")):
        mode = q.get("mode", "status")
        if mode == "reset":
            return await reset_before(request)
        if mode == "cut":
            return await reset_mid(request)
        await asyncio.sleep(int(q.get("stall_ms", "0")) / 1000)
        headers = {}
        if "retry_after" in q:
            headers["Retry-After"] = q["retry_after"]
        if "retry_after_date" in q:
            at = time.time() + float(q["retry_after_date"])
            headers["Retry-After"] = email.utils.formatdate(at, usegmt=True)
        return web.json_response({"attempt": n}, status=int(q.get("status", "503")), headers=headers)
    await asyncio.sleep(int(q.get("ms", "0")) / 1000)
    resp = web.json_response({"attempt": n})
    if q.get("close") == "1":
        resp.force_close()
    return resp


async def flaky_count(request):
    return web.json_response({"attempts": flaky_counts.get(request.match_info["key"], 0)})


async def slow_reader(request):
    """Reads the request body at about `rate` bytes a second (the listening
    socket's receive buffer is small, so the client feels it), then answers
    with how many bytes it read; `stall_ms` then holds the answer."""
    rate = int(request.query.get("rate", "262144"))
    got = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        got += len(chunk)
        await asyncio.sleep(len(chunk) / rate)
    await asyncio.sleep(int(request.query.get("stall_ms", "0")) / 1000)
    return web.json_response({"read": got})


def blackhole():
    """A loopback port whose accept queue is full: connects to it hang, so a
    connect timeout can be tested without leaving the machine."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    return port, (listener, fillers)


CONNECT_SEEN = []  # (target, Proxy-Authorization) of each CONNECT, for /connect-seen


async def connect_proxy(reader, writer):
    """A forward proxy that speaks only CONNECT (what a client uses for an
    https:// URL through an http:// proxy): it answers 200 with a header
    of its own, then relays bytes both ways until either side closes."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    auth = next((l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("proxy-authorization:")), "")
    if method != "CONNECT":
        writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    CONNECT_SEEN.append({"target": target, "auth": auth})
    host, port = target.rsplit(":", 1)
    try:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
    except OSError:
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    writer.write(b"HTTP/1.1 200 Connection established\r\nProxy-Agent: avideo-peer\r\n\r\n")
    await writer.drain()

    async def pipe(src, dst):
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def connect_seen(request):
    return web.json_response(CONNECT_SEEN)


def tls_context(tmp):
    """A self-signed certificate, made now: clients that verify must refuse it."""
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def die_with_parent():
    """End when the spec's Lua process ends, even killed or aborted: its
    finalizer that stops the peer does not run then."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent went before prctl
        sys.exit(0)


def main():
    die_with_parent()
    host = "127.0.0.1"
    app = web.Application(middlewares=[track])
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/hold", hold)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset-stats", reset_stats)
    app.router.add_get("/last-echo", last_echo)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_route("*", "/redirect/{code}", redirect_code)
    app.router.add_route("*", "/redirect-unread/{code}", redirect_unread)
    app.router.add_route("*", "/chain/{n}", chain)
    app.router.add_get("/digest/{realm}", digest)
    app.router.add_get("/connect-seen", connect_seen)
    app.router.add_route("*", "/redirect-loop", redirect_loop)
    app.router.add_get("/reset-before", reset_before)
    app.router.add_get("/reset-mid", reset_mid)
    app.router.add_get("/short", short)
    app.router.add_get("/chunked-cut", chunked_cut)
    app.router.add_get("/status-trailer", status_trailer)
    app.router.add_get("/redirect-big", redirect_big)
    app.router.add_get("/bad-status", bad_status)
    app.router.add_get("/two-spaces", two_spaces)
    app.router.add_get("/bare-cr", bare_cr)
    app.router.add_get("/basic-only", basic_only)
    app.router.add_get("/length-and-chunked", length_and_chunked)
    app.router.add_get("/bad-trailer", bad_trailer)
    app.router.add_get("/bad-chunk", bad_chunk)
    app.router.add_get("/many-headers", many_headers)
    app.router.add_get("/digest-stale", digest_stale)
    app.router.add_get("/stall", stall)
    app.router.add_get("/drip", drip)
    app.router.add_get("/big", big)
    app.router.add_get("/not-json", text)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/gzip-bomb", gzip_bomb)
    app.router.add_get("/gzip-cut", gzip_cut)
    app.router.add_get("/deflate", deflated)
    app.router.add_get("/gzip-members", gzip_members)
    app.router.add_get("/bad-gzip", bad_gzip)
    app.router.add_get("/status-only", status_only)
    app.router.add_get("/headers-cut", headers_cut)
    app.router.add_get("/two-lengths", two_lengths)
    app.router.add_get("/same-lengths", same_lengths)
    app.router.add_get("/interim-only", interim_only)
    app.router.add_get("/big-header", big_header)
    app.router.add_route("*", "/chaos", chaos)
    app.router.add_route("*", "/slow-reader", slow_reader)
    app.router.add_route("*", "/flaky/{key}", flaky)
    app.router.add_get("/flaky-count/{key}", flaky_count)

    async def start():
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=30)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        # the same port on 127.0.0.2: a second "host" for per-host limit specs
        await web.TCPSite(runner, "127.0.0.2", port).start()
        hole_port, keep = blackhole()
        # the certificate stays while the peer runs: clients may trust it (ca_file)
        with tempfile.TemporaryDirectory() as tmp:
            tls = web.TCPSite(runner, host, 0, ssl_context=tls_context(tmp))
            await tls.start()
            print(f"peer listening on http://{host}:{port}", flush=True)
            print(f"blackhole {hole_port}", flush=True)
            print(f"tls {tls._server.sockets[0].getsockname()[1]} {os.path.join(tmp, 'cert.pem')}", flush=True)
            # a listener whose connections have a small receive buffer: an
            # upload to it goes at the pace the handler reads (/slow-reader)
            small = socket.socket()
            small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            small.bind((host, 0))
            small.listen(64)
            await web.SockSite(runner, small).start()
            print(f"small-buffer {small.getsockname()[1]}", flush=True)
            proxy = await asyncio.start_server(connect_proxy, host, 0)
            print(f"connect-proxy {proxy.sockets[0].getsockname()[1]}", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(start())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
