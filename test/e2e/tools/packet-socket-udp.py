#!/usr/bin/env python3
"""One UDP datagram sent as a raw Ethernet frame through an AF_PACKET socket, and its answer.

The kernel builds the skb of a frame sent this way with only the link-layer header (14 bytes) in
its linear data once the frame is larger than a page (af_packet.c: packet_snd / packet_alloc_skb
put hard_header_len bytes in the head and the rest in page fragments), which is how tap/vhost
backends and packet generators hand frames to the stack. The receiving veth keeps the skb as it
is, so a TC program on the peer sees the IPv4 and UDP headers outside skb->data_end.

usage: packet-socket-udp.py IFNAME SRC_MAC DST_MAC SRC_IP DST_IP DPORT SIZE
Prints the answer's source address, port and payload as JSON; exit 3 without an answer in 5 s.
"""
import json
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack(f'!{len(data) // 2}H', data))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def main() -> int:
    ifname, src_mac, dst_mac, src_ip, dst_ip, dport, size = sys.argv[1:8]
    dport, size = int(dport), int(size)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((src_ip, 0))
    rx.settimeout(5)
    sport = rx.getsockname()[1]
    payload = bytes((i * 7 + 3) & 0xff for i in range(size - 14 - 20 - 8))
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack('!BBH', 0, socket.IPPROTO_UDP, udp_len)
    udp = struct.pack('!HHHH', sport, dport, udp_len, 0) + payload
    udp_check = checksum(pseudo + udp) or 0xffff
    udp = udp[:6] + struct.pack('!H', udp_check) + udp[8:]
    # DF clear: the node fragments it for the backend's 1500-byte link.
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + udp_len, 0x4242, 0, 64, socket.IPPROTO_UDP, 0, src, dst)
    ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
    frame = bytes.fromhex(dst_mac.replace(':', '')) + bytes.fromhex(src_mac.replace(':', '')) + b'\x08\x00' + ip + udp
    assert len(frame) == size
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind((ifname, 0))
    tx.send(frame)
    try:
        data, addr = rx.recvfrom(65535)
    except socket.timeout:
        sys.stderr.write('no answer\n')
        return 3
    print(json.dumps({'from': addr[0], 'port': addr[1], 'answer': data.decode('utf8', 'replace')}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
