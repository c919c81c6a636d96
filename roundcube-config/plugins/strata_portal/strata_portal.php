<?php

/*
 * strata_portal: when Strata refuses a login because the domain's webmail portal is closed
 * (IMAP "NO [UNAVAILABLE] Your primary mail server is working; ..."), show the user Strata's
 * sentence instead of Roundcube's bare "Login failed.".  A wrong password still shows
 * "Login failed.": Strata gives it no reason, so that a stranger learns nothing.
 *
 * Install: Roundcube loads plugins only from its own plugins directory.  Debian's roundcube-core:
 *     ln -s "$PWD/roundcube-config/plugins/strata_portal" /var/lib/roundcube/plugins/
 * The official image: mount this directory at /var/www/html/plugins/strata_portal
 * (webmail/compose.yaml does).  roundcube-config/config.inc.php enables it.
 */
class strata_portal extends rcube_plugin
{
    public $task = 'login';

    public function init()
    {
        $this->add_hook('login_failed', [$this, 'login_failed']);
    }

    public function login_failed($args)
    {
        $rcmail = rcmail::get_instance();
        $storage = $rcmail->storage;
        if ($storage instanceof rcube_imap && $storage->conn
            && strtoupper((string) $storage->conn->resultcode) === 'UNAVAILABLE') {
            // get_error_str() reads "NO: <text>"; the user sees only Strata's text.
            $text = preg_replace('/^[A-Z0-9 -]+: /', '', (string) $storage->get_error_str());
            $rcmail->output->reset();
            $rcmail->output->show_message(rcube::Q($text), 'warning');
        }
        return $args;
    }
}
