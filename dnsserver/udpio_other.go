//go:build !linux

package dnsserver

import "net"

func newPacketIO(pc net.PacketConn, n int) (packetIO, error) { return newPlainIO(pc, n), nil }
