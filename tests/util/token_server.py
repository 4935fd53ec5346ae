#!/usr/bin/python3
"""A registry token server for tests (the distribution token protocol).

It generates its own signing key and a self-signed certificate for it at
start (written to --cert: the registry's rootcertbundle), checks Basic
credentials (or an OAuth2 refresh token in a form POST), and answers
GET /token?service=S&scope=repository:NAME:ACTIONS with an ES256 JWT the
registry accepts: the certificate rides in the JWT's x5c header, so the
registry trusts the token by its chain to rootcertbundle. Every token
issued appends one line to --log, so a test can count them. Listens on
127.0.0.1 only; the port it got is written to --port-file once it listens.
"""

import argparse
import base64
import datetime
import json
import os
import secrets
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_key_and_cert(cert_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ovbd test token issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
        .sign(key, hashes.SHA256())
    )
    tmp = cert_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_path)
    return key, cert


def sign_jwt(key, cert, claims):
    header = {"typ": "JWT", "alg": "ES256",
              "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def parse_scopes(values):
    access = []
    for scope in values:
        # repository:NAME:ACTIONS, where NAME may itself hold no ':' here.
        parts = scope.split(":")
        if len(parts) < 3:
            continue
        access.append({"type": parts[0], "name": ":".join(parts[1:-1]),
                       "actions": [a for a in parts[-1].split(",") if a]})
    return access


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--refresh-token", default="")
    ap.add_argument("--service", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--expires-in", type=int, default=300)
    args = ap.parse_args()

    key, cert = make_key_and_cert(args.cert)
    want_basic = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("token_server: " + (fmt % a) + "\n")

        def reply(self, code, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def issue(self, params, subject):
            if params.get("service", [""])[0] != args.service:
                return self.reply(400, {"errors": [{"code": "BAD_SERVICE"}]})
            now = int(time.time())
            claims = {"iss": args.issuer, "sub": subject, "aud": args.service,
                      "exp": now + args.expires_in, "nbf": now - 10, "iat": now,
                      "jti": secrets.token_hex(8), "access": parse_scopes(params.get("scope", []))}
            token = sign_jwt(key, cert, claims)
            with open(args.log, "a") as f:
                f.write(json.dumps({"sub": subject, "scope": params.get("scope", [])}) + "\n")
            self.reply(200, {"token": token, "access_token": token, "expires_in": args.expires_in,
                             "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()})

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/healthz":
                return self.reply(200, {})
            if url.path != "/token":
                return self.reply(404, {})
            if self.headers.get("Authorization", "") != want_basic:
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]},
                                  [("WWW-Authenticate", 'Basic realm="token"')])
            self.issue(urllib.parse.parse_qs(url.query), args.user)

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            n = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(n).decode())
            if (url.path != "/token" or not args.refresh_token or
                    form.get("grant_type", [""])[0] != "refresh_token" or
                    form.get("refresh_token", [""])[0] != args.refresh_token):
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            self.issue(form, args.user)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
