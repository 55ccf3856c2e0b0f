// The rings of a packet socket (PACKET_RX_RING, PACKET_TX_RING; packet(7),
// Documentation/networking/packet_mmap.rst): the frames (TPACKET_V1/V2) or
// blocks (TPACKET_V3) the kernel shares with the application, mapped from
// the socket at offset 0, the receive ring first.
//
// Dump: the ring is mapped read-only by the dumper from its copy of the
// socket; the frames the application holds (TP_STATUS_USER) and everything
// before the kernel's position are kept whole, and that position (the frame
// or block the kernel fills next) is found from the contents (docs/STATE.md).
// Restore: the same request makes the rings again; the kernel's receive
// position is brought where it was by feeding it frames of our own on lo (a
// filter lets only ours in), then the kept frames are written back.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "minicriu.pb.h"

namespace minicriu {

uint64_t packet_ring_size(const img::PacketRing& r);
// Both rings, as one mmap of the socket maps them.
uint64_t packet_rings_size(const img::PacketSocketFile& sk);

// Reads the rings of fd (the dumper's copy), whose configuration packet_diag
// gave (in sk): head and slots of the receive ring; refuses in one line what
// cannot be carried (a used transmit ring, a V3 block the kernel holds
// frames in, a full V3 ring).
[[nodiscard]] Status read_packet_rings(int fd, img::PacketSocketFile& sk, const std::string& what);

// setsockopt PACKET_RX_RING / PACKET_TX_RING with the request of the dump
// (PACKET_VERSION and PACKET_RESERVE are set before, with the options).
[[nodiscard]] Status set_packet_rings(int fd, const img::PacketSocketFile& sk, const std::string& what);

// Brings the kernel's receive position where it was and writes the kept
// frames back. fd is not bound yet: it is bound to lo for the frames it is
// fed, and the caller binds it where it belongs afterwards.
[[nodiscard]] Status refill_packet_rings(int fd, const img::PacketSocketFile& sk, const std::string& what);

}  // namespace minicriu
