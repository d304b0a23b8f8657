/*
 * serial.c - polled 16550 UART on COM1 (I/O port 0x3F8).
 *
 * Firmware (OVMF, most PCs) has already programmed COM1 as 115200 8N1, and
 * reprogramming it under the firmware's own serial driver would be rude, so
 * the UART is only set up when its line control register does not already
 * read 8N1.  Every byte waits for THRE (transmit holding register empty);
 * the wait is bounded so a missing UART cannot hang the machine.
 */
#include "hv_lib.h"

#define COM1        0x3F8
#define UART_THR    0   /* transmit holding (DLAB=0) */
#define UART_DLL    0   /* divisor latch low (DLAB=1) */
#define UART_IER    1   /* interrupt enable (DLAB=0) */
#define UART_DLM    1   /* divisor latch high (DLAB=1) */
#define UART_FCR    2
#define UART_LCR    3
#define UART_MCR    4
#define UART_LSR    5
#define LCR_8N1     0x03
#define LCR_DLAB    0x80
#define LSR_THRE    0x20
#define THRE_SPINS  1000000 /* ~100 ms of port reads: far above one byte time */

void serial_init(void)
{
    if ((inb(COM1 + UART_LCR) & ~LCR_DLAB) == LCR_8N1)
        return;
    outb(COM1 + UART_IER, 0x00);         /* polled: no interrupts */
    outb(COM1 + UART_LCR, LCR_DLAB);
    outb(COM1 + UART_DLL, 1);            /* 115200 = 1.8432 MHz / 16 / 1 */
    outb(COM1 + UART_DLM, 0);
    outb(COM1 + UART_LCR, LCR_8N1);
    outb(COM1 + UART_FCR, 0xC7);         /* enable + clear FIFOs */
    outb(COM1 + UART_MCR, 0x03);         /* DTR, RTS */
}

static void putc_raw(char c)
{
    for (unsigned i = 0; i < THRE_SPINS; i++) {
        if (inb(COM1 + UART_LSR) & LSR_THRE)
            break;
        __asm__ volatile("pause");
    }
    outb(COM1 + UART_THR, (uint8_t)c);
}

void serial_write(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            putc_raw('\r');
        putc_raw(s[i]);
    }
}
