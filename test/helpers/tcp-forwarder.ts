import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A TCP address that follows the database primary, as a virtual IP, a DNS name or a pooler does in front of
 * a Patroni cluster: connections go to the current target; `switchTo` points it elsewhere and cuts every
 * connection open through it (as a moved VIP does), so clients reconnect to the new primary.
 */
export class TcpForwarder {
  readonly #server: Server;
  readonly #open = new Set<Socket>();
  #target: number;

  private constructor(server: Server, target: number) {
    this.#server = server;
    this.#target = target;
  }

  static async start(targetPort: number): Promise<TcpForwarder> {
    const server = createServer((client) => {
      forwarder.#forward(client);
    });
    const forwarder = new TcpForwarder(server, targetPort);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return forwarder;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  switchTo(targetPort: number): void {
    this.#target = targetPort;
    for (const socket of this.#open) socket.destroy();
    this.#open.clear();
  }

  async close(): Promise<void> {
    this.switchTo(this.#target);
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #forward(client: Socket): void {
    const upstream = connect(this.#target, '127.0.0.1');
    for (const socket of [client, upstream]) {
      this.#open.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        this.#open.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
