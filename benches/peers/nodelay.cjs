// Preloaded (node --require) into a peer for one extra measurement: every TCP socket gets
// TCP_NODELAY, which the peers' ssh2 dependency leaves off (Nagle's algorithm then holds
// small SSH packets back until the previous one is acknowledged).
const net = require('net');
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  this.setNoDelay(true);
  return connect.apply(this, args);
};
