# SPDX-License-Identifier: Apache-2.0
"""A TCP forwarder on 127.0.0.1 that a test can take down and bring back,
to make a real server (moto, ClickHouse) unreachable without losing its
state: down() closes the listener and every connection in flight (the
client sees resets and refusals, as with a dead server), up() listens
again on the same port. cut_after(n) takes the proxy down once n more
bytes went from client to server (an outage in the middle of an upload);
throttle(bytes_per_s) slows the client-to-server direction, so that an
upload lasts long enough to be interrupted on purpose.
"""
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port, host="127.0.0.1"):
        self.target = (host, target_port)
        with socket.socket() as s:
            s.bind((host, 0))
            self.port = s.getsockname()[1]
        self.host = host
        self.lock = threading.Lock()
        self.conns = []
        self.listener = None
        self.cut_budget = None
        self.sent_to_server = 0
        self.rate = None

    @property
    def is_up(self):
        with self.lock:
            return self.listener is not None

    @property
    def endpoint(self):
        return f"http://{self.host}:{self.port}"

    def up(self):
        with self.lock:
            if self.listener is not None:
                return self
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(64)
        with self.lock:
            self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def down(self):
        with self.lock:
            ls, self.listener = self.listener, None
            conns, self.conns = self.conns, []
            self.cut_budget = None
        if ls:
            ls.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def throttle(self, bytes_per_s):
        self.rate = bytes_per_s

    def cut_after(self, nbytes):
        with self.lock:
            self.cut_budget = nbytes

    def _accept(self, ls):
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not ls:
                    client.close()
                    server.close()
                    return
                self.conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and self.rate:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
                if upstream:
                    cut = False
                    with self.lock:
                        self.sent_to_server += len(data)
                        if self.cut_budget is not None:
                            self.cut_budget -= len(data)
                            cut = self.cut_budget <= 0
                    if cut:
                        self.down()
                        return
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
