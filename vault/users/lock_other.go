//go:build !unix

package users

import (
	"errors"
	"os"
)

// The file directory needs flock; on other systems use the Vault directory.

func tryLock(*os.File) (bool, error) {
	return false, errors.New("the users file needs flock (a Unix system); use keys.source vault")
}

func unlockFile(*os.File) error { return nil }
