#!/usr/bin/env python3
"""Cheap, dependency-free readiness probes for the local real-services kit.

    probe.py kafka HOST:PORT     Kafka Metadata(v4) request; ready when the
                                 broker lists at least one unfenced broker.
    probe.py mongo HOST:PORT     MongoDB OP_MSG {ping: 1}; ready when ok == 1.
    probe.py http URL            HTTP GET; ready on a 2xx answer.

Exit status 0 means "answers like the real thing", anything else means not
(yet). Standard library only, so it runs on any python3 before the venv exists.
Used by deploy/local/lib.sh; a probe never takes longer than --timeout seconds.
"""

import argparse
import socket
import struct
import sys
import urllib.request


def _split(addr):
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed after %d/%d bytes" % (len(buf), n))
        buf += chunk
    return buf


def probe_kafka(addr, timeout):
    # Request header v1: api_key INT16, api_version INT16, correlation_id INT32,
    # client_id STRING. Metadata v4 body: topics ARRAY (-1 = null = all topics),
    # allow_auto_topic_creation BOOLEAN. v4 is non-flexible and accepted by
    # Kafka 1.0 .. 4.x.
    client_id = b"switchyard-probe"
    correlation_id = 0x5359
    body = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    body += struct.pack(">ib", -1, 0)
    with socket.create_connection(_split(addr), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        resp = _recv_exact(sock, size)
    # Response header v0: correlation_id INT32. Metadata v4 body starts with
    # throttle_time_ms INT32, brokers ARRAY (INT32 count). KRaft leaves fenced
    # brokers out of this list, so count >= 1 means the broker is serving.
    corr, _throttle, brokers = struct.unpack(">iii", resp[:12])
    if corr != correlation_id:
        raise RuntimeError("unexpected correlation id %d" % corr)
    if brokers < 1:
        raise RuntimeError("no live brokers in metadata yet")
    return "%d broker(s)" % brokers


def _bson_doc(elements):
    payload = b"".join(elements) + b"\x00"
    return struct.pack("<i", len(payload) + 4) + payload


def probe_mongo(addr, timeout):
    # OP_MSG (opcode 2013), flagBits 0, one kind-0 section holding the command
    # document {ping: 1, $db: "admin"}.
    admin = b"admin\x00"
    doc = _bson_doc([
        b"\x10ping\x00" + struct.pack("<i", 1),
        b"\x02$db\x00" + struct.pack("<i", len(admin)) + admin,
    ])
    msg = struct.pack("<I", 0) + b"\x00" + doc
    header = struct.pack("<iiii", 16 + len(msg), 0x5359, 0, 2013)
    with socket.create_connection(_split(addr), timeout=timeout) as sock:
        sock.sendall(header + msg)
        (size,) = struct.unpack("<i", _recv_exact(sock, 4))
        resp = _recv_exact(sock, size - 4)
    _req_id, _resp_to, opcode = struct.unpack("<iii", resp[:12])
    if opcode != 2013:
        raise RuntimeError("unexpected reply opcode %d" % opcode)
    reply = resp[12 + 4 + 1:]  # skip header rest, flagBits, section kind
    # Look for the top-level "ok" field; servers send it as double or int32.
    i = reply.find(b"\x01ok\x00")
    if i >= 0:
        (ok,) = struct.unpack("<d", reply[i + 4:i + 12])
    else:
        i = reply.find(b"\x10ok\x00")
        if i < 0:
            raise RuntimeError("no 'ok' field in ping reply")
        (ok,) = struct.unpack("<i", reply[i + 4:i + 8])
    if ok != 1:
        raise RuntimeError("ping returned ok=%r" % ok)
    return "ping ok"


def probe_http(url, timeout):
    # Bypass any proxy settings: the targets are always on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        if not 200 <= resp.status < 300:
            raise RuntimeError("HTTP %d" % resp.status)
        return "HTTP %d" % resp.status


PROBES = {"kafka": probe_kafka, "mongo": probe_mongo, "http": probe_http}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(PROBES))
    parser.add_argument("target", help="HOST:PORT, or a URL for http")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    try:
        detail = PROBES[args.kind](args.target, args.timeout)
    except Exception as exc:  # any failure just means "not ready"
        if args.verbose:
            print("%s %s: not ready: %s" % (args.kind, args.target, exc), file=sys.stderr)
        return 1
    if args.verbose:
        print("%s %s: %s" % (args.kind, args.target, detail), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
