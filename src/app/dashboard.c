/*
 * The dashboard page, embedded at build time: the assembler's .incbin puts
 * the bytes of dashboard.html (path relative to the top of the tree, where
 * make runs) into .rodata, followed by a NUL and its length. The Makefile
 * names the HTML as a prerequisite of this object.
 */
#include <stddef.h>

__asm__(".section .rodata\n"
        ".global dashboard_html\n"
        ".type dashboard_html, @object\n"
        ".balign 16\n"
        "dashboard_html:\n"
        ".incbin \"src/app/dashboard.html\"\n"
        ".byte 0\n"
        ".size dashboard_html, . - dashboard_html\n"
        ".global dashboard_html_len\n"
        ".type dashboard_html_len, @object\n"
        ".balign 8\n"
        "dashboard_html_len:\n"
        ".quad dashboard_html_len - dashboard_html - 1\n"
        ".size dashboard_html_len, 8\n"
        ".previous\n");
