'use strict';

// The example app pipe deploys: a tiny HTTP server behind nginx.
// Plain CommonJS and the core http module so it runs on Debian 12's node 18 as is.

const http = require('http');
const os = require('os');
const ms = require('ms');
const escapeHtml = require('escape-html');

const port = Number(process.env.PORT || 8080);
const host = process.env.HOST || '127.0.0.1';
const nodeEnv = process.env.NODE_ENV || 'development';
// nginx passes the name the client asked for; SERVER_NAME is the configured fallback.
const serverName = process.env.SERVER_NAME || 'localhost';
const started = Date.now();

function page(req) {
  const name = req.headers['x-server-name'] || serverName;
  const uptime = ms(Date.now() - started, { long: true });
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head><meta charset="utf-8"><title>ponyfoo on pipe</title></head>',
    '<body>',
    '<h1>ponyfoo</h1>',
    `<p>NODE_ENV=${escapeHtml(nodeEnv)}</p>`,
    `<p>SERVER_NAME=${escapeHtml(name)}</p>`,
    `<p>host ${escapeHtml(os.hostname())}, up ${escapeHtml(uptime)}</p>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

const server = http.createServer((req, res) => {
  const path = (req.url || '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' });
    res.end('method not allowed\n');
    return;
  }
  if (path === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('ok\n');
    return;
  }
  if (path === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page(req));
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
  res.end('not found\n');
});

server.listen(port, host, () => {
  console.log(`ponyfoo: listening on ${host}:${port} (NODE_ENV=${nodeEnv})`);
});

// pipe's supervisor (and systemd) stop services with SIGTERM: close cleanly. nginx keeps idle
// keep-alive connections to the app open, which `close` alone would wait for until the 2 s
// deadline (every restart, `pipe up --watch` ones too): those go at once, requests in flight
// still finish.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
