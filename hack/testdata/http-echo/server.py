"""Answer every GET with this pod's hostname; exit cleanly on SIGTERM."""
import http.server
import signal
import socket
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server naming)
        body = f"hello from {socket.gethostname()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    server = http.server.ThreadingHTTPServer(("", 8080), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("listening on :8080", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
