// node-peer.mjs: the upstream Node reference server (npm @durable-streams/server,
// pinned in package.json), file-backed, as the peer that scripts/bench --compare
// measures in the same run. Never part of the product.
//
//   node scripts/bench.d/node-peer.mjs PORT DATA-DIR
//
// Prints "ready" once it listens; stops on SIGTERM or SIGINT.
import { DurableStreamTestServer } from "@durable-streams/server"

const [port, dataDir] = process.argv.slice(2)
if (!port || !dataDir) {
  console.error("usage: node-peer.mjs PORT DATA-DIR")
  process.exit(2)
}
const server = new DurableStreamTestServer({
  port: Number(port),
  host: "127.0.0.1",
  dataDir,
})
await server.start()
console.log("ready")
const stop = async () => {
  await server.stop()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
