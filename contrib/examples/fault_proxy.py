"""A fault-injecting TCP proxy: listen, accept, connect upstream, pipe, add a fault.
Usage: python3 fault_proxy.py LISTEN_PORT UPSTREAM_PORT [LATENCY_MS]   (0: any free port)"""
import sys

import tcpgw


def main(listen_port: int, upstream_port: int, latency_ms: int = 100) -> None:
    with tcpgw.connect() as gw:  # $TCPGW_SOCKET, else the default path
        srv = gw.createServer(("127.0.0.1", listen_port))
        print(f"listening on 127.0.0.1:{srv.local['port']}", flush=True)
        while True:
            client = srv.accept()  # waits for the next client
            try:
                upstream = gw.createClient(("127.0.0.1", upstream_port), 5000)
            except tcpgw.RPCError as e:  # e.g. ECONNREFUSED
                print(f"upstream refused: {e}", flush=True)
                client.close()
                continue
            client.pipe(upstream.handle)  # the bytes now flow inside the gateway
            # Upstream's answers reach the client late (Toxiproxy's "downstream" latency);
            # added to a live pipe, as a toxic to a running proxy.
            upstream.addFault("latency", attributes={"latency": latency_ms, "jitter": latency_ms // 10})
            print(f"proxying {client.remote['addr']}:{client.remote['port']} with {latency_ms} ms latency", flush=True)


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:4]))
