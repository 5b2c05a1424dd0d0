/* rawsend SRC DST PORT COUNT: COUNT UDP datagrams from any source address, IP header
 * and all written by hand on a raw socket (IPPROTO_RAW implies IP_HDRINCL): what a
 * container holding only CAP_NET_RAW can send. Built static for the busybox test image. */
#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: rawsend SRC DST PORT COUNT\n");
        return 2;
    }
    unsigned char packet[sizeof(struct iphdr) + sizeof(struct udphdr) + 8];
    memset(packet, 0, sizeof packet);
    struct iphdr *ip = (struct iphdr *)packet;
    struct udphdr *udp = (struct udphdr *)(packet + sizeof *ip);
    memcpy(packet + sizeof *ip + sizeof *udp, "spoofed!", 8);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons(sizeof packet);
    if (inet_pton(AF_INET, argv[1], &ip->saddr) != 1 || inet_pton(AF_INET, argv[2], &ip->daddr) != 1) {
        fprintf(stderr, "rawsend: bad address\n");
        return 2;
    }
    udp->source = htons(40000);
    udp->dest = htons((unsigned short)atoi(argv[3]));
    udp->len = htons(sizeof *udp + 8); /* checksum 0: none, valid for UDP over IPv4 */
    int sock = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (sock < 0) {
        perror("rawsend: socket");
        return 1;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = ip->daddr};
    for (int i = 0; i < atoi(argv[4]); i++) {
        if (sendto(sock, packet, sizeof packet, 0, (struct sockaddr *)&to, sizeof to) < 0) {
            perror("rawsend: sendto");
            return 1;
        }
        usleep(100000);
    }
    return 0;
}
