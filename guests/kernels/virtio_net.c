/* virtio_net: a virtio-net device (virtio 1.2 section 5.1) as a tiny driver sees it,
 * over virtio-mmio or virtio-pci (the runtime's virtio_find).
 *
 * Negotiates VERSION_1 | MAC | STATUS | MRG_RXBUF (cmdline mrg=0 leaves MRG_RXBUF
 * out), posts RX_BUFS receive buffers of RX_BUF_SIZE bytes (12-byte virtio_net_hdr_v1
 * included) on the receiveq and prints
 *   mac=<xx:xx:xx:xx:xx:xx> link=<0|1>
 * With cmdline `ip=A.B.C.D peer=E.F.G.H` it then broadcasts an ARP request for the
 * peer, waits (polling the used ring, re-posting every buffer it consumes, resending
 * once a second, 3 s in all) for the reply and prints
 *   arp reply from <mac>
 * then sends `count=` (default 1, at most 8) ICMP echo requests, one at a time, each
 * answered within 3 s by
 *   icmp reply seq=<n> bytes=<ICMP header + data>
 * ARP requests for our own address are answered while waiting.  Received frames
 * must carry a valid header (num_buffers 1, no NEEDS_CSUM or GSO: neither
 * GUEST_CSUM nor GUEST_TSO* is negotiated) and the replies valid checksums.
 * split=N posts each receive buffer as a chain of two descriptors, N bytes and the
 * rest (spec 2.6.4: the device may assume nothing about the framing, so N < 12,
 * splitting the header, is as valid as any other).
 * Exit 0, or STATUS_TEST_FAILED after a "FAIL: ..." line. */
#include "runtime.h"

#define RECEIVEQ  0
#define TRANSMITQ 1

#define VIRTIO_NET_F_MAC       5
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS    16
#define VIRTIO_NET_S_LINK_UP   1

#define HDR_SIZE    12          /* struct virtio_net_hdr_v1 (num_buffers at 10) */
#define RX_BUFS     4
#define RX_BUF_SIZE 1536        /* >= 1526: header + 1514-byte frame */
#define ETH_HLEN    14
#define ETH_P_IP    0x0800
#define ETH_P_ARP   0x0806
#define ICMP_DATA   56          /* like ping: 64 bytes of ICMP */
#define ICMP_ID     0x7076
#define WAIT_MS     3000

static struct virtio_dev dev;
static u8 rxbuf[RX_BUFS][RX_BUF_SIZE] __attribute__((aligned(64)));
static u8 txbuf[HDR_SIZE + 1514] __attribute__((aligned(64)));
static u8 mac[6], peer_mac[6];
static const u8 broadcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static u8 my_ip[4], peer_ip[4];
static u32 split;             /* cmdline split=N: each receive buffer as N + rest bytes */

static __attribute__((noreturn)) void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    vm_exit(STATUS_TEST_FAILED);
}

static u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static void put16(u8 *p, u16 v) { p[0] = (u8)(v >> 8); p[1] = (u8)v; }
static int same(const u8 *a, const u8 *b, u32 n)
{
    for (u32 i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* RFC 1071 Internet checksum: the one's complement of the one's complement sum of
 * the 16-bit big-endian words.  Over data that holds its checksum it gives 0. */
static u16 inet_csum(const u8 *p, u32 n)
{
    u32 sum = 0;
    for (u32 i = 0; i + 1 < n; i += 2)
        sum += get16(p + i);
    if (n & 1)
        sum += (u32)p[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (u16)~sum;
}

static int parse_ip(const char *key, u8 ip[4])
{
    char buf[24];
    if (cmdline_get(key, buf, sizeof(buf)))
        return -1;
    const char *s = buf;
    for (int i = 0; i < 4; i++) {
        u32 v = 0;
        int digits = 0;
        for (; *s >= '0' && *s <= '9' && digits < 4; s++, digits++)
            v = v * 10 + (u32)(*s - '0');
        if (!digits || v > 255 || *s != (i < 3 ? '.' : 0))
            fail("bad %s=%s", key, buf);
        ip[i] = (u8)v;
        s++;
    }
    return 0;
}

static void print_mac(const char *prefix, const u8 *m)
{
    printf("%s%02x:%02x:%02x:%02x:%02x:%02x", prefix, m[0], m[1], m[2], m[3], m[4], m[5]);
}

/* ---- receive ---- */
static void rx_post(u16 id)
{
    struct virtq *q = &dev.vq[RECEIVEQ];
    if (split) {                  /* a two-descriptor chain from 2 * id */
        u16 d = (u16)(2 * id);
        q->desc[d] = (struct virtq_desc){ (u64)rxbuf[id], split,
                                          VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, (u16)(d + 1) };
        q->desc[d + 1] = (struct virtq_desc){ (u64)rxbuf[id] + split, RX_BUF_SIZE - split,
                                              VIRTQ_DESC_F_WRITE, 0 };
        virtq_publish(q, d);
        return;
    }
    q->desc[id] = (struct virtq_desc){ (u64)rxbuf[id], RX_BUF_SIZE, VIRTQ_DESC_F_WRITE, 0 };
    virtq_publish(q, id);         /* descriptor, ring entry, then avail->idx */
}

/* Next received frame (after its header) within the deadline; *id names the buffer,
 * which the caller hands back with rx_done().  NULL on timeout. */
static u8 *rx_next(u64 deadline, u32 *len, u16 *id)
{
    struct virtq *q = &dev.vq[RECEIVEQ];
    u64 now = time_ms();
    if (now >= deadline)
        return NULL;
    u32 used_id;
    long n = virtq_wait(q, (u32)(deadline - now), &used_id);
    if (n < 0)
        return NULL;
    if (split) {
        if (used_id & 1)
            fail("receiveq: used id %u is not the head of a chain", used_id);
        used_id /= 2;
    }
    if (used_id >= RX_BUFS)
        fail("receiveq: used id %u was never posted", used_id);
    if (n < HDR_SIZE || n > RX_BUF_SIZE)
        fail("receiveq: used length %ld", n);
    u8 *h = rxbuf[used_id];
    u16 num_buffers = (u16)(h[10] | h[11] << 8);
    if (num_buffers != 1)     /* 5.1.6.4: 1 without MRG_RXBUF; frames fit one buffer */
        fail("receiveq: num_buffers=%u for a %ld-byte buffer", num_buffers, n);
    /* virtio 1.2 5.1.6.4.2: without GUEST_CSUM the device sets flags to zero, and
     * without GUEST_TSO* gso_type to GSO_NONE. */
    if (h[0] != 0 || h[1] != 0)
        fail("receiveq: header flags=0x%x gso_type=0x%x without guest offloads", h[0], h[1]);
    *id = (u16)used_id;
    *len = (u32)n - HDR_SIZE;
    return h + HDR_SIZE;
}

static void rx_done(u16 id)
{
    rx_post(id);
    virtq_notify(&dev.vq[RECEIVEQ]);
}

/* ---- transmit ---- */
static u8 *tx_frame(const u8 *dst, u16 type)
{
    memset(txbuf, 0, HDR_SIZE);   /* no offloads; num_buffers 0 on transmit */
    u8 *f = txbuf + HDR_SIZE;
    memcpy(f, dst, 6);
    memcpy(f + 6, mac, 6);
    put16(f + 12, type);
    return f;
}

static void tx_send(u32 frame_len)
{
    if (frame_len < 60) {         /* pad to the Ethernet minimum (without FCS) */
        memset(txbuf + HDR_SIZE + frame_len, 0, 60 - frame_len);
        frame_len = 60;
    }
    struct virtq_buf b = { (u64)txbuf, HDR_SIZE + frame_len, 0 };
    if (virtq_submit(&dev.vq[TRANSMITQ], &b, 1, 0) < 0)
        fail("transmitq: frame not sent");
}

static void send_arp(u16 oper, const u8 *dst, const u8 *tha, const u8 *tpa)
{
    u8 *f = tx_frame(dst, ETH_P_ARP), *a = f + ETH_HLEN;
    put16(a, 1);                  /* Ethernet */
    put16(a + 2, ETH_P_IP);
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, oper);
    memcpy(a + 8, mac, 6);
    memcpy(a + 14, my_ip, 4);
    memcpy(a + 18, tha, 6);
    memcpy(a + 24, tpa, 4);
    tx_send(ETH_HLEN + 28);
}

static void icmp_payload(u8 *p, u16 seq)
{
    for (u32 i = 0; i < ICMP_DATA; i++)
        p[i] = (u8)(i + seq);
}

static void send_echo(u16 seq)
{
    u8 *f = tx_frame(peer_mac, ETH_P_IP), *ip = f + ETH_HLEN, *icmp = ip + 20;
    u16 total = 20 + 8 + ICMP_DATA;
    ip[0] = 0x45;                 /* IPv4, 5 words of header */
    ip[1] = 0;
    put16(ip + 2, total);
    put16(ip + 4, seq);           /* identification */
    put16(ip + 6, 0x4000);        /* DF */
    ip[8] = 64;                   /* TTL */
    ip[9] = 1;                    /* ICMP */
    put16(ip + 10, 0);
    memcpy(ip + 12, my_ip, 4);
    memcpy(ip + 16, peer_ip, 4);
    put16(ip + 10, inet_csum(ip, 20));
    icmp[0] = 8;                  /* echo request */
    icmp[1] = 0;
    put16(icmp + 2, 0);
    put16(icmp + 4, ICMP_ID);
    put16(icmp + 6, seq);
    icmp_payload(icmp + 8, seq);
    put16(icmp + 2, inet_csum(icmp, 8 + ICMP_DATA));
    tx_send(ETH_HLEN + total);
}

/* What a received frame is to us. */
enum { OTHER, ARP_REPLY, ECHO_REPLY };

static int classify(const u8 *f, u32 len, u16 seq)
{
    if (len < ETH_HLEN || !(same(f, mac, 6) || same(f, broadcast, 6)))
        return OTHER;
    u16 type = get16(f + 12);
    const u8 *p = f + ETH_HLEN;
    u32 plen = len - ETH_HLEN;
    if (type == ETH_P_ARP && plen >= 28 && get16(p) == 1 && get16(p + 2) == ETH_P_IP &&
        p[4] == 6 && p[5] == 4) {
        u16 oper = get16(p + 6);
        if (oper == 1 && same(p + 24, my_ip, 4)) {        /* who has my_ip? answer it */
            send_arp(2, p + 8, p + 8, p + 14);
            return OTHER;
        }
        if (oper == 2 && same(p + 14, peer_ip, 4) && same(p + 24, my_ip, 4)) {
            memcpy(peer_mac, p + 8, 6);
            return ARP_REPLY;
        }
        return OTHER;
    }
    if (type != ETH_P_IP || plen < 20 || (p[0] >> 4) != 4 || p[9] != 1)
        return OTHER;
    u32 ihl = (u32)(p[0] & 15) * 4, total = get16(p + 2);
    if (ihl < 20 || total < ihl + 8 || total > plen || !same(p + 12, peer_ip, 4) ||
        !same(p + 16, my_ip, 4))
        return OTHER;
    const u8 *icmp = p + ihl;
    if (icmp[0] != 0 || get16(icmp + 4) != ICMP_ID)
        return OTHER;
    if (inet_csum(p, ihl) != 0)
        fail("echo reply: bad IPv4 header checksum");
    if (inet_csum(icmp, total - ihl) != 0)
        fail("echo reply: bad ICMP checksum");
    if (get16(icmp + 6) != seq)
        return OTHER;             /* a late reply to an earlier request */
    u8 want[ICMP_DATA];
    icmp_payload(want, seq);
    if (total - ihl != 8 + ICMP_DATA || !same(icmp + 8, want, ICMP_DATA))
        fail("echo reply seq=%u: payload differs from the request", seq);
    return ECHO_REPLY;
}

/* Receives until a frame classifies as `want` (re-posting every buffer); `resend`
 * (if any) runs first and then every second.  Returns the ICMP length for an echo
 * reply, 0 for an ARP reply, -1 on timeout. */
static int await(int want, u16 seq, void (*resend)(void))
{
    u64 start = time_ms(), deadline = start + WAIT_MS, next_send = start;
    for (;;) {
        if (resend && time_ms() >= next_send) {
            resend();
            next_send += 1000;
        }
        u64 until = resend && next_send < deadline ? next_send : deadline;
        u32 len;
        u16 id;
        u8 *f = rx_next(until, &len, &id);
        if (!f) {
            if (time_ms() >= deadline)
                return -1;
            continue;
        }
        int what = classify(f, len, seq);
        int icmp_len = what == ECHO_REPLY ? get16(f + ETH_HLEN + 2) - (f[ETH_HLEN] & 15) * 4 : 0;
        rx_done(id);
        if (what == want)
            return icmp_len;
    }
}

static void arp_request(void) { send_arp(1, broadcast, (const u8[6]){ 0 }, peer_ip); }

void kmain(void)
{
    int found = virtio_find(&dev, VIRTIO_ID_NET, 0);
    if (found < 0)
        fail("no virtio-net device");
    if (found)
        fail("virtio-net transport");
    u64 want = VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS);
    if (cmdline_get_u64("mrg", 1))
        want |= VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF);
    if (virtio_init(&dev, want, 2))
        fail("virtio-net initialisation");
    if (!virtio_has(&dev, VIRTIO_NET_F_MAC))
        fail("the device offers no MAC (features 0x%lx)", dev.device_features);

    /* Config: mac[6] at 0, status (le16) at 6. */
    u32 lo = virtio_cfg_read32(&dev, 0), hi = virtio_cfg_read32(&dev, 4);
    for (int i = 0; i < 4; i++)
        mac[i] = (u8)(lo >> (8 * i));
    mac[4] = (u8)hi;
    mac[5] = (u8)(hi >> 8);
    int link = virtio_has(&dev, VIRTIO_NET_F_STATUS) ? (hi >> 16) & VIRTIO_NET_S_LINK_UP : 1;

    split = (u32)cmdline_get_u64("split", 0);
    if (split >= RX_BUF_SIZE)
        fail("split=%u: at most %u", split, RX_BUF_SIZE - 1);
    for (u16 i = 0; i < RX_BUFS; i++)
        rx_post(i);
    virtq_notify(&dev.vq[RECEIVEQ]);
    print_mac("mac=", mac);
    printf(" link=%d mrg_rxbuf=%d\n", link, virtio_has(&dev, VIRTIO_NET_F_MRG_RXBUF));

    int have_ip = parse_ip("ip", my_ip) == 0, have_peer = parse_ip("peer", peer_ip) == 0;
    if (!have_ip && !have_peer)
        vm_exit(STATUS_OK);
    if (!have_ip || !have_peer)
        fail("ip= and peer= go together");
    if (!link)
        fail("link is down");

    if (await(ARP_REPLY, 0, arp_request) < 0)
        fail("no arp reply from %u.%u.%u.%u within %u ms", peer_ip[0], peer_ip[1],
             peer_ip[2], peer_ip[3], WAIT_MS);
    print_mac("arp reply from ", peer_mac);
    printf("\n");

    u64 count = cmdline_get_u64("count", 1);
    if (count < 1 || count > 8)
        fail("count=%lu: 1 to 8", count);
    for (u16 seq = 1; seq <= count; seq++) {
        send_echo(seq);
        int bytes = await(ECHO_REPLY, seq, NULL);
        if (bytes < 0)
            fail("no icmp reply seq=%u within %u ms", seq, WAIT_MS);
        printf("icmp reply seq=%u bytes=%d\n", seq, bytes);
    }
    vm_exit(STATUS_OK);
}
