#!/usr/bin/env node
// Make a MindTouch / CXone Server API Token (SPEC §3.2) with Node's built-in node:crypto only,
// print it, or send one request with it (Node 18 or newer: global fetch).
//
//   node server_token.mjs KEY SECRET USER
//   node server_token.mjs --url https://docs.example.com/@api/deki/users/current KEY SECRET USER
//
// USER is a decimal user id (42) or "=" and a username (=jane.doe), given as it is: the
// username is URL-encoded here. --epoch sets the token's time (Unix seconds; default now).
//
// The token is tkn_{key}_{epoch}_{user}_{sig}, where sig is the hex HMAC-SHA256 of
// "{key}_{epoch}_{user}" keyed with the UTF-8 bytes of the key's secret, and user is as it
// stands in the token (still encoded). It is valid for server_token_window (default 5 min)
// around epoch: make a new one per request, or at least every few minutes.
//
// In real code, read the secret from your secret store, not from the command line.
import { createHmac } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

// encodeUsername URL-encodes like `tokenagent mint` (Go's url.QueryEscape): every byte but
// letters, digits and -_.~ as %XX (UTF-8), and space as "+". encodeURIComponent leaves
// !'()* alone, so they are encoded here.
function encodeUsername(name) {
  return encodeURIComponent(name)
    .replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
    .replace(/%20/g, '+');
}

// serverToken returns a Server API Token for key and secret acting as user (a decimal id, or
// "=" and a username, URL-encoded here) made at epoch (Unix seconds, default now).
export function serverToken(key, secret, user, epoch = Math.floor(Date.now() / 1000)) {
  if (!/^[A-Za-z0-9]{1,64}$/.test(key)) {
    throw new Error('key must be 1 to 64 letters and digits');
  }
  if (user.length > 1 && user.startsWith('=')) {
    user = '=' + encodeUsername(user.slice(1));
  } else if (!/^[0-9]{1,19}$/.test(user)) {
    throw new Error('user must be a decimal id (1 to 19 digits) or "=" and a username');
  }
  if (!Number.isSafeInteger(epoch)) {
    throw new Error('epoch must be an integer number of seconds');
  }
  const msg = `${key}_${epoch}_${user}`;
  const sig = createHmac('sha256', Buffer.from(secret, 'utf8')).update(msg, 'utf8').digest('hex');
  return `tkn_${msg}_${sig}`;
}

async function main() {
  const usage = 'usage: server_token.mjs [--epoch N] [--url URL] KEY SECRET USER';
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: { epoch: { type: 'string' }, url: { type: 'string' } },
    });
  } catch (e) {
    console.error(`${e.message}\n${usage}`);
    return 2;
  }
  const { values, positionals } = args;
  if (positionals.length !== 3) {
    console.error(usage);
    return 2;
  }
  let token;
  try {
    const epoch = values.epoch === undefined ? undefined : Number(values.epoch);
    token = serverToken(positionals[0], positionals[1], positionals[2], epoch);
  } catch (e) {
    console.error(`server_token.mjs: ${e.message}`);
    return 2;
  }
  if (values.url === undefined) {
    console.log(token);
    return 0;
  }
  const resp = await fetch(values.url, {
    headers: { 'X-Deki-Token': token },
    signal: AbortSignal.timeout(30000),
  });
  console.log(`HTTP ${resp.status}`);
  console.log(await resp.text());
  return resp.ok ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main().catch((e) => {
    console.error(`server_token.mjs: ${e.message}`);
    return 1;
  });
}
