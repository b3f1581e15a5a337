// webhook-receiver.mjs: a webhook receiver for the t/9*-subs-*.t tests (driven by
// t/lib/Receiver.pm). Listens on 127.0.0.1 (port from argv[2], 0: any), prints
// "listening PORT", then one JSON line per request it receives:
//   { at_ms, path, signature, sig_ok, sig_why, raw, body, answered }
// sig_ok: the Webhook-Signature header verifies (PROTOCOL 7.1) against the key its kid
// names in the JWK Set at the URL given as argv[3] (fetched at each request, so a key
// the server stops publishing fails), and its timestamp is within five minutes.
// Answers: lines "STATUS JSON" on stdin queue answers for the next requests
// ("500 {}", "200 {\"done\":true}"); with none queued it answers argv[4] (default
// "200 {}").
import { createServer } from 'node:http';
import { createPublicKey, verify } from 'node:crypto';
import { createInterface } from 'node:readline';

const port = Number(process.argv[2] || 0);
const jwksUrl = process.argv[3];
const fallback = process.argv[4] || '200 {}';
const queue = [];

createInterface({ input: process.stdin }).on('line', (l) => {
	if (l.trim()) queue.push(l.trim());
});

async function check(raw, header) {
	if (!header) return [false, 'no Webhook-Signature'];
	const m = header.match(/^t=(\d+),kid=([^,]+),ed25519=([A-Za-z0-9_-]+)$/);
	if (!m) return [false, 'malformed header'];
	const [, t, kid, sig] = m;
	if (Math.abs(Date.now() / 1000 - Number(t)) > 300) return [false, 'stale timestamp'];
	const res = await fetch(jwksUrl);
	if (res.status !== 200) return [false, `JWKS answered ${res.status}`];
	if (!(res.headers.get('content-type') || '').includes('application/jwk-set+json'))
		return [false, 'JWKS content type'];
	const jwks = await res.json();
	const key = jwks.keys.find((k) => k.kid === kid);
	if (!key) return [false, `kid ${kid} not in the JWKS`];
	const pub = createPublicKey({ key, format: 'jwk' });
	const ok = verify(null, Buffer.from(`${t}.${raw}`), pub, Buffer.from(sig, 'base64url'));
	return [ok, ok ? '' : 'signature does not verify'];
}

const server = createServer((req, res) => {
	const chunks = [];
	req.on('data', (c) => chunks.push(c));
	req.on('end', async () => {
		const raw = Buffer.concat(chunks).toString('utf8');
		let body = null;
		try { body = JSON.parse(raw); } catch { body = null; }
		let ok = false, why = '';
		try { [ok, why] = await check(raw, req.headers['webhook-signature']); }
		catch (e) { why = String(e); }
		const answer = queue.length ? queue.shift() : fallback;
		const sp = answer.indexOf(' ');
		const status = Number(answer.slice(0, sp));
		process.stdout.write(JSON.stringify({
			at_ms: Date.now(), path: req.url, signature: req.headers['webhook-signature'] || null,
			sig_ok: ok, sig_why: why, raw, body, answered: status,
		}) + '\n');
		res.writeHead(status, { 'content-type': 'application/json' });
		res.end(answer.slice(sp + 1));
	});
});
server.listen(port, '127.0.0.1', () => {
	process.stdout.write(`listening ${server.address().port}\n`);
});
process.stdin.on('end', () => { server.close(); process.exit(0); });
